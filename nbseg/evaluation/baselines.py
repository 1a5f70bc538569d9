"""The k-means baselines every method is compared with, on the *same* frozen patch tokens, written once.

* :func:`score_row` / :func:`score_rows` - one segmentation scored with one / both protocols: dataset-level
  Hungarian (at the label resolution; mIoU over present classes and the STEGO averaging) and AlignSeg's per-image
  many-to-one precision protocol (at ``per_image_size``, 100 x 100 as released); each row says how its labels were
  made (``path``) and how it averages.
* :func:`kmeans_baselines` - per-image k-means (each image alone) and dataset-level k-means (one clustering of every
  patch of the split), each scored by :func:`score_rows` (AlignSeg Fig. 9; the probes' k-means benchmark).
* :func:`dataset_kmeans_over_seeds` - dataset-level k-means into C clusters once per seed, scored with Hungarian
  matching at each ground truth's size: mean and std over seeds (DCN's Table 1 baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from nbseg.cluster import kmeans_segmentation, upsample_labels
from nbseg.evaluation.metrics import evaluate

PER_IMAGE_SIZE = 100          # the released AlignSeg evaluation scores per image at 100 x 100 (docs Sec. 3.6)
BOTH_PROTOCOLS = ("hungarian", "per-image")


# How each row's labels were made (the ``path`` column): the per-image protocol's numbers depend on it.
PATH_NBSEG = "nbseg: scores upsampled bilinearly to the input, argmax"
PATH_RELEASED = "AlignSeg release: argmax on the token grid, labels nearest to 100x100"
PATH_KMEANS = "k-means on the token grid, labels nearest to the input"
RELEASED_PROTOCOL = "per-image-released"      # the per-image protocol on labels made by the released path
AVERAGING = {"hungarian": "classes present in the gt (miou); present or predicted, STEGO (miou_stego)",
             "per-image": "per image: classes present in it; then mean over images"}


def score_row(preds: torch.Tensor, features, dataset, n_clusters: int, method: str, protocol: str, *,
              size: int | None = None, label: str | None = None, **extra) -> dict:
    """One row: segmentation ``preds`` (N, H, W) of ``features``' images (a :class:`nbseg.features.FeatureSet`)
    scored against ``dataset``'s labels with ``protocol`` at ``size`` x ``size`` (None: the label resolution);
    ``label`` names the row's protocol (default ``protocol``); ``extra`` columns are added. ``miou`` averages the
    classes present; a dataset-level row also gets ``miou_stego``, the STEGO / TransFGU averaging (a predicted
    class absent from the ground truth scores 0), for tables beside papers."""
    r = evaluate(list(preds), list(features.labels), n_clusters, dataset.num_classes, protocol=protocol,
                 class_names=dataset.class_names, ignore_index=getattr(dataset, "ignore_index", 255), eval_size=size)
    per_image = protocol == "per-image"
    return {"method": method, "K": n_clusters, "protocol": label or protocol,
            "scored_at": f"{size}x{size}" if size else "x".join(map(str, features.image_size)),
            "miou": r.miou, "pixel_acc": r.pixel_acc, "miou_excl_first": r.miou_excl_first if per_image else None,
            "miou_stego": None if per_image else r.miou_over("stego"), "mean_over": r.mean_over,
            "averaging": AVERAGING["per-image" if per_image else "hungarian"], "n_images": r.n_images, **extra}


def score_rows(preds: torch.Tensor, features, dataset, n_clusters: int, method: str, *,
               per_image_size: int | None = PER_IMAGE_SIZE, **extra) -> list[dict]:
    """Two :func:`score_row` s: dataset-level Hungarian at the label resolution and per-image many-to-one precision
    at ``per_image_size`` (None: the label resolution)."""
    return [score_row(preds, features, dataset, n_clusters, method, protocol,
                      size=per_image_size if protocol == "per-image" else None, **extra)
            for protocol in BOTH_PROTOCOLS]


@dataclass
class KMeansBaselines:
    """Per-image and dataset-level k-means segmentations (N, H, W) of a FeatureSet and their score rows."""

    per_image: torch.Tensor
    dataset: torch.Tensor
    k_per_image: int
    k_dataset: int
    rows: list[dict]


def kmeans_baselines(features, dataset, k_per_image: int, k_dataset: int | None = None, *, seed: int = 0,
                     per_image_size: int | None = PER_IMAGE_SIZE) -> KMeansBaselines:
    """Per-image k-means (each image alone, K = ``k_per_image``) and dataset-level k-means (one clustering of every
    patch of the split, K = ``k_dataset``, default ``k_per_image``) on the frozen patch tokens (N, h, w, D) of
    ``features``, cosine metric, upsampled (nearest) to the images, each scored with both protocols."""
    k_dataset = k_dataset or k_per_image
    per_image = kmeans_segmentation(features.patches, k_per_image, scope="image", size=features.image_size,
                                    seed=seed)
    whole = kmeans_segmentation(features.patches, k_dataset, scope="dataset", size=features.image_size, seed=seed)
    rows = (score_rows(per_image, features, dataset, k_per_image, "per-image k-means", evaluation="Clustering",
                       per_image_size=per_image_size, path=PATH_KMEANS)
            + score_rows(whole, features, dataset, k_dataset, "dataset k-means", evaluation="Clustering",
                         per_image_size=per_image_size, path=PATH_KMEANS))
    return KMeansBaselines(per_image, whole, k_per_image, k_dataset, rows)


def dataset_kmeans_over_seeds(patches: torch.Tensor, gt: Sequence[torch.Tensor], n_classes: int,
                              seeds: Sequence[int], *, ignore_index: int = 255) -> dict:
    """Dataset-level k-means of patch tokens (N, h, w, D) into ``n_classes`` clusters, each image's cluster map
    upsampled (nearest) to its ground truth's size, Hungarian over the split; one k-means (one initialisation) per
    seed. Returns mean / std of mIoU (classes present; ``miou_stego_*``: the STEGO averaging) and pixel accuracy
    (fractions) and the per-seed mIoU."""
    mious, accs, stego = [], [], []
    for seed in seeds:
        grid = kmeans_segmentation(patches, n_classes, scope="dataset", seed=seed, n_init=1)
        preds = [upsample_labels(g, tuple(t.shape[-2:])) for g, t in zip(grid, gt)]
        r = evaluate(preds, list(gt), n_clusters=n_classes, n_classes=n_classes, protocol="hungarian",
                     ignore_index=ignore_index)
        mious.append(r.miou)
        accs.append(r.pixel_acc)
        stego.append(r.miou_over("stego"))
    return {"miou_mean": float(np.mean(mious)), "miou_std": float(np.std(mious)),
            "miou_stego_mean": float(np.mean(stego)), "miou_stego_std": float(np.std(stego)),
            "pixel_acc_mean": float(np.mean(accs)), "pixel_acc_std": float(np.std(accs)), "miou_per_seed": mious}


__all__ = ["score_row", "score_rows", "PATH_NBSEG", "PATH_RELEASED", "PATH_KMEANS", "RELEASED_PROTOCOL", "AVERAGING",
           "KMeansBaselines", "kmeans_baselines", "dataset_kmeans_over_seeds", "PER_IMAGE_SIZE", "BOTH_PROTOCOLS"]
