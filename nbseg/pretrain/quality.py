"""How good a backbone's frozen features are on the world, measured one way everywhere (the embedded backbone's
quality bars, its learning curves during pretraining, ``benchmarks/embedded_quality.py``).

* saliency: head-mean CLS attention kept at 60% of its mass vs the thing foreground (mean per-image IoU; DINO's
  rule and AlignSeg's blur + small-component variant);
* semantics: dataset-level k-means on patch tokens (K = number of full classes, cosine, Hungarian, mIoU over present
  classes) and a linear probe (logistic regression on frozen patch tokens) on the full label set;
* DCN's pattern: intra / inter-class angles within each image against over the whole split.

Bars for the default embedded backbone (issue "A world that features can learn from"): saliency >= 0.45, probe
pixel accuracy >= 0.80 and >= random init + 0.15, k-means mIoU >= random init + 0.12 and >= raw-colour k-means +
0.12, per-image angles tighter than dataset angles. :func:`bars_met` checks them.
"""
from __future__ import annotations

import time

import torch

from nbseg.angles import angle_study
from nbseg.cluster import assign, kmeans
from nbseg.evaluation import evaluate
from nbseg.probes import extract_dataset, kmeans_segmentation, linear_probe, saliency_iou

BARS = {"saliency_iou_dino60": 0.45, "linear_probe_pixel_acc": 0.80, "probe_over_random": 0.15,
        "kmeans_over_random": 0.12, "kmeans_over_raw_colour": 0.12}


def backbone_quality(backbone, train_full, val_voc, val_full, *, n_train: int = 500, n_val: int | None = None,
                     angles: bool = True, progress: bool = False) -> dict:
    """Every measure of the module docstring for ``backbone`` on ``val_full`` (probe fitted on ``n_train`` train
    images; ``n_val`` limits the val images, for cheap learning-curve points)."""
    t0 = time.perf_counter()
    was_training = backbone.training
    backbone.eval()
    val = extract_dataset(backbone, val_full, limit=n_val, progress=progress)
    n = val.patches.shape[0]
    voc_labels = torch.stack([val_voc[i].label for i in range(n)])
    train = extract_dataset(backbone, train_full, limit=n_train, progress=progress)
    k = val_full.num_classes
    clusters = kmeans_segmentation(val.patches, k, scope="dataset", size=val.image_size, seed=0)
    km = evaluate(list(clusters), list(val.labels), n_clusters=k, n_classes=k, protocol="hungarian",
                  class_names=val_full.class_names)
    probe = linear_probe(train, val, k)
    out = {
        "saliency_iou_dino60": saliency_iou(val.attn, voc_labels, fraction=0.6, method="dino").mean().item(),
        "saliency_iou_alignseg60": saliency_iou(val.attn, voc_labels, fraction=0.6, method="alignseg").mean().item(),
        "kmeans_dataset_miou": km.miou,
        "kmeans_dataset_pixel_acc": km.pixel_acc,
        "linear_probe_pixel_acc": probe.pixel_acc,
        "linear_probe_miou": probe.miou,
    }
    if angles:
        study = angle_study(val.patches, val.labels, k).summary()
        out.update({key: study[key] for key in ("per_image_intra_deg", "per_image_inter_deg", "dataset_intra_deg",
                                                "dataset_inter_deg")})
    out.update({"k": k, "n_val": n, "n_train_probe": min(n_train, len(train_full)),
                "seconds": round(time.perf_counter() - t0, 1)})
    backbone.train(was_training)
    return out


def raw_colour_kmeans(dataset, *, limit: int | None = None, max_pixels: int = 400_000, seed: int = 0) -> dict:
    """Dataset-level k-means on raw RGB pixels (K = classes, Hungarian) over the first ``limit`` images (all when
    None): how far colour alone gets."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    images = torch.stack([dataset[i].image for i in range(n)])          # (N, 3, H, W)
    gts = [dataset[i].label for i in range(n)]
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    sample = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:max_pixels]]
    k = dataset.num_classes
    _, centroids, _ = kmeans(sample, k, metric="euclidean", seed=seed, n_init=3)
    preds = assign(pixels, centroids, metric="euclidean").reshape(images.shape[0], *images.shape[-2:])
    r = evaluate(list(preds), gts, n_clusters=k, n_classes=k, protocol="hungarian")
    return {"K": k, "miou": r.miou, "pixel_acc": r.pixel_acc, "mean_over": r.mean_over, "n_images": n}


def bars_met(trained: dict, random_init: dict, raw_colour_miou: float) -> dict[str, bool]:
    """Which quality bars ``trained`` meets, beside ``random_init`` and raw-colour k-means (module docstring)."""
    out = {
        "saliency >= 0.45": trained["saliency_iou_dino60"] >= BARS["saliency_iou_dino60"],
        "probe acc >= 0.80": trained["linear_probe_pixel_acc"] >= BARS["linear_probe_pixel_acc"],
        "probe acc >= random + 0.15": trained["linear_probe_pixel_acc"]
        >= random_init["linear_probe_pixel_acc"] + BARS["probe_over_random"],
        "k-means >= random + 0.12": trained["kmeans_dataset_miou"]
        >= random_init["kmeans_dataset_miou"] + BARS["kmeans_over_random"],
        "k-means >= raw colour + 0.12": trained["kmeans_dataset_miou"] >= raw_colour_miou
        + BARS["kmeans_over_raw_colour"],
    }
    if "per_image_intra_deg" in trained:
        out["per-image angles tighter than dataset"] = bool(
            trained["per_image_intra_deg"] < trained["dataset_intra_deg"]
            and trained["per_image_inter_deg"] > trained["dataset_inter_deg"])
    return out


def quality_table(backbones: dict, *, root=None, world_size: int | None = None, n_val: int | None = None,
                  n_train: int = 500, progress: bool = False):
    """One row per backbone ({label: Backbone}) with the measures of :func:`backbone_quality` on the world's val
    split at ``root`` (None: the default world's render ``world_size``, by default the probes' 192-px render; see
    :func:`nbseg.probes.basics.open_dataset`), and a first row for raw-colour k-means: the table the quickstart
    prints beside its figures and the model card holds."""
    import pandas as pd

    from nbseg.probes.basics import open_dataset

    val_voc, val_full, train_full = (open_dataset("world", root, split, labels=labels, world_size=world_size)
                                     for split, labels in (("val", "voc"), ("val", "full"), ("train", "full")))
    rows = [{"features": "raw RGB pixels (colour alone)",
             "kmeans_dataset_miou": raw_colour_kmeans(val_full, limit=n_val)["miou"]}]
    for label, backbone in backbones.items():
        q = backbone_quality(backbone, train_full, val_voc, val_full, n_train=n_train, n_val=n_val,
                             progress=progress)
        rows.append({"features": label, "backbone": backbone.describe(), **q})
    return pd.DataFrame(rows)
