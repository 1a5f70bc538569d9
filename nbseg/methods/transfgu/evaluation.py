"""TransFGU's stages wired together, its evaluation, and the functions the notebook, the commands and
``benchmarks/transfgu.py`` share.

* :func:`prepare` - crop bank -> concepts -> pseudo-label bank of a split (each stored and resumable);
  :func:`training_dataset` - what ``nbseg train transfgu`` trains on (the stages run first when absent).
* :func:`pseudo_label_segmentation` / :func:`student_segmentation` - label maps from the stored pseudo labels
  (Eq. 6, with Eq. 8's background for VOC-style data) and from the trained student, at the evaluation size.
* :func:`score` - the one evaluation protocol (dataset-level Hungarian, or many-to-one for over-clustering).
* :func:`evaluate_transfgu` -> :class:`TransFGUEvaluation`: the student, the initial pseudo labels and dataset
  k-means on the same frozen patch tokens, each row labelled with backbone, weights, dataset and variant.

Every number is scored at ``image_size`` (the released protocol: images and labels resized to 320, labels nearest).
No checkpoint is chosen on validation labels: the student is the last epoch's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from nbseg.data.base import resize_pair
from nbseg.evaluation import evaluate as evaluate_protocol
from nbseg.evaluation.baselines import dataset_kmeans_over_seeds
from nbseg.features.cache import build_feature_cache
from nbseg.methods.transfgu import bank as B
from nbseg.methods.transfgu.data import PseudoLabelCrops, open_split
from nbseg.methods.transfgu.losses import minmax_normalise, with_background
from nbseg.prototype_scores import segment_by_argmax
from nbseg.runs import backbone_facts

SMOKE_PROFILE = {"train_limit": 32, "bank_limit": 8, "crop_scales": [0.6, 0.5], "epochs": 4, "bootstrap_start": 2,
                 "bootstrap_intervals": [1], "batch_size": 8, "log_every": 1, "checkpoint_every": 2}
SMOKE_VAL_LIMIT = 16


@dataclass
class Prepared:
    """The stages of one config: the crop bank, the concepts and the pseudo labels of ``split``."""

    bank: B.CropBank
    concepts: B.Concepts
    pseudo: B.PseudoLabels
    split: str


def prepare(cfg, backbone, *, split: str | None = None, limit: int | None = None, progress: bool = True,
            seed: int | None = None, tokens_of=None, on_chunk=None) -> Prepared:
    """Crop bank (training split) -> concepts (k-means seed ``seed``, default ``cfg.kmeans_seed``) -> Grad-CAM
    pseudo labels of the first ``limit`` images of ``split`` (default: the training split, ``train_limit``)."""
    things, stuff, _ = cfg.class_split()
    bank = B.crop_bank(cfg, backbone, open_split(cfg), progress=progress)
    concept_set = B.concepts(cfg, bank, things, stuff, seed=seed)
    split = split or cfg.split
    limit = cfg.train_limit if (limit is None and split == cfg.split) else limit
    pseudo = B.pseudo_label_bank(cfg, backbone, open_split(cfg, split), concept_set, limit=limit, progress=progress,
                                 tokens_of=tokens_of, on_chunk=on_chunk)
    return Prepared(bank, concept_set, pseudo, split)


def training_dataset(cfg, model, progress: bool = True) -> PseudoLabelCrops:
    """The spec's training set: the training split's images with their pseudo labels (built first when absent)."""
    prepared = prepare(cfg, model.backbone, progress=progress)
    return PseudoLabelCrops(open_split(cfg), prepared.pseudo, cfg, model.backbone.patch_size)


# ----------------------------------------------------------------------------------------------------------
# Segmentations and scores
# ----------------------------------------------------------------------------------------------------------

def eval_labels(cfg, split: str | None = None, limit: int | None = None) -> torch.Tensor:
    """Ground truth of the evaluation split resized (nearest) to ``image_size``: (N, S, S) int64."""
    data = open_split(cfg, split or cfg.eval_split)
    n = len(data) if limit is None else min(limit, len(data))
    return B.load_labels(data, n, cfg.image_size)


def pseudo_label_segmentation(maps: torch.Tensor, foreground_only: bool, background_threshold: float,
                              size: int) -> torch.Tensor:
    """Eq. (6)/(8): Grad-CAM maps (N, K', h, w) -> label maps (N, size, size): per-image min-max normalisation,
    the background channel first for VOC-style data, bilinear upsampling, argmax."""
    p = minmax_normalise(maps.float())
    if foreground_only:
        p = with_background(p, background_threshold)
    return segment_by_argmax(p, (size, size))


def val_patches(cfg, backbone, split: str | None = None, limit: int | None = None, progress: bool = True):
    """Frozen patch tokens of the evaluation split at ``image_size`` through the feature cache: (N, h, w, D)."""
    data = open_split(cfg, split or cfg.eval_split)
    cache = build_feature_cache(backbone, data, cfg.image_size, root=cfg.cache_root, limit=limit, progress=progress)
    return torch.from_numpy(cache.patches[:].astype("float32"))


def student_segmentation(model, patches: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The trained student on cached patches (N, h, w, D) -> label maps (N, S, S) at ``image_size``."""
    size = (model.cfg.image_size,) * 2
    return torch.cat([segment_by_argmax(model.scores_from_features(patches[i:i + batch]), size)
                      for i in range(0, len(patches), batch)])


def score(preds: torch.Tensor, gts: torch.Tensor, n_clusters: int, n_classes: int,
          protocol: str = "hungarian") -> dict:
    """The one protocol over the whole split (ignore 255): ``{"miou", "miou_present", "pixel_acc"}`` as fractions.

    ``miou`` averages the way TransFGU's (and STEGO's) code does, so it can sit beside the paper's tables: a class
    the matching predicts but the ground truth lacks counts as IoU 0 (``mean_over="stego"``); ``miou_present``
    averages only the classes present in the ground truth (nbseg's default). A per-image protocol has only the
    latter (it averages within each image)."""
    r = evaluate_protocol(list(preds), list(gts), n_clusters, n_classes, protocol=protocol, ignore_index=255)
    miou = r.miou if protocol == "per-image" else r.miou_over("stego")
    return {"miou": miou, "miou_present": r.miou, "pixel_acc": r.pixel_acc}


def epoch_evaluator(cfg, backbone, limit: int | None = None, progress: bool = True):
    """``nbseg train transfgu --epoch-eval``: the student's Hungarian mIoU on the evaluation split at every epoch
    end (``metrics.csv``; the last epoch of round 1 is Table 3's "trained" row)."""
    patches, gts = val_patches(cfg, backbone, limit=limit, progress=progress), eval_labels(cfg, limit=limit)
    n_classes = len(open_split(cfg, cfg.eval_split).class_names)

    def scores(model) -> dict:
        s = score(student_segmentation(model, patches), gts, cfg.n_classes, n_classes)
        return {"val_miou": s["miou"], "val_pixel_acc": s["pixel_acc"], "round": float(model.round)}
    return scores


# ----------------------------------------------------------------------------------------------------------
# The evaluation object
# ----------------------------------------------------------------------------------------------------------

@dataclass
class TransFGUEvaluation:
    """Rows (one per segmentation) with what produced them; ``predictions`` keeps the label maps for figures."""

    rows: list[dict]
    description: dict
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    gts: torch.Tensor | None = None
    images: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def metrics(self) -> dict:
        out = {**self.description, **self.extra}
        for r in self.rows:
            out[f"{r['key']}/miou"] = r["miou"]
            out[f"{r['key']}/pixel_acc"] = r["pixel_acc"]
        return out

    def title(self) -> str:
        d = self.description
        return f"TransFGU ({d['variant']}) on {d['dataset']}, {d['backbone']}"

    def report(self) -> str:
        cols = ["segmentation", "protocol", "K", "miou", "pixel_acc"]
        return f"{self.title()}\n{self.table[cols].to_string(index=False, float_format=lambda v: f'{v:.4f}')}"


def evaluate_transfgu(model, *, split: str | None = None, limit: int | None = None, kmeans: bool = True,
                      progress: bool = True) -> TransFGUEvaluation:
    """Score the student, the initial pseudo labels (Grad-CAM of the evaluation images with the run's concepts) and
    dataset k-means on the same frozen patch tokens (seed ``cfg.seed``), dataset-level Hungarian at ``image_size``."""
    cfg, backbone = model.cfg, model.backbone
    split = split or cfg.eval_split
    data = open_split(cfg, split)
    gts = eval_labels(cfg, split, limit)
    n_classes, K = len(data.class_names), cfg.n_classes
    prepared = prepare(cfg, backbone, split=split, limit=len(gts), progress=progress)
    patches = val_patches(cfg, backbone, split, len(gts), progress)
    preds = {"student": student_segmentation(model, patches),
             "pseudo_labels": pseudo_label_segmentation(prepared.pseudo.tensor(), model.foreground_only,
                                                        cfg.background_threshold, cfg.image_size)}
    names = {"student": f"TransFGU student, round {int(model.round)} ({cfg.variant})",
             "pseudo_labels": f"initial pseudo labels ({cfg.variant})"}
    facts = {"backbone": backbone.describe(), "weights_sha256": backbone.weights_sha256,
             "dataset": f"{cfg.data}/{split} ({cfg.labels if cfg.data == 'world' else cfg.data} labels)",
             "variant": cfg.variant}
    rows = [{"key": k, "segmentation": names[k], "protocol": "hungarian", "K": K, **score(p, gts, K, n_classes),
             **facts} for k, p in preds.items()]
    if kmeans:
        km = dataset_kmeans_over_seeds(patches, list(gts), n_classes, [cfg.seed])
        rows.append({"key": "kmeans", "segmentation": "dataset k-means on patch tokens", "protocol": "hungarian",
                     "K": n_classes, "miou": km["miou_stego_mean"], "miou_present": km["miou_mean"],
                     "pixel_acc": km["pixel_acc_mean"], **facts})
    description = {"method": "TransFGU", **backbone_facts(backbone), "dataset": facts["dataset"],
                   "variant": cfg.variant, "n_images": len(gts), "n_classes": n_classes, "K": K,
                   "scored_at": f"{cfg.image_size}x{cfg.image_size}",
                   "averaging": "miou: TransFGU's / STEGO's (a predicted class absent from the ground truth scores "
                                "0); miou_present: classes present in the ground truth"}
    return TransFGUEvaluation(rows, description, preds, gts, B.load_images(data, 0, len(gts), cfg.image_size))


# ----------------------------------------------------------------------------------------------------------
# What the notebook shows beside the evaluation
# ----------------------------------------------------------------------------------------------------------

def concept_quality(cfg, prepared: Prepared) -> dict:
    """Purity / NMI of the crops' concepts against each crop's majority class (the config's label set), over the
    crops the concepts were fitted on."""
    data = open_split(cfg)
    labels = B.load_labels(data, prepared.bank.cls.shape[0], prepared.bank.size)
    majority = B.crop_majority_classes(labels, prepared.bank.windows, len(data.class_names))
    return B.purity_nmi(prepared.concepts.crop_labels(prepared.bank), majority)


def gradcam_examples(cfg, backbone, concept_set: B.Concepts, n: int = 4, split: str | None = None):
    """The first ``n`` images of ``split`` (default: evaluation) with their CLS attention and Grad-CAM maps:
    images (n, 3, S, S), attention (n, heads, h, w), maps (n, K, h, w)."""
    from nbseg.methods.transfgu.gradcam import pseudo_label_maps

    images = B.load_images(open_split(cfg, split or cfg.eval_split), 0, n, cfg.image_size)
    attn = backbone.extract(images).attn
    return images, attn, pseudo_label_maps(backbone, images, concept_set.centroids, cfg.variant, cfg.gradient,
                                           mass=cfg.gradcam_mass)


def table_3(evaluation: TransFGUEvaluation, curve: pd.DataFrame | None, cfg) -> pd.DataFrame:
    """This run's Table 3 row (initial pseudo labels, the student after round 1 from the per-epoch curve, the
    bootstrapped student; mIoU %) beside the paper's rows, labelled as the paper's."""
    from nbseg.methods.transfgu.paper import PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_3

    m = evaluation.metrics()
    trained = None
    if curve is not None and cfg.refresh_epochs():
        rows = curve.loc[curve["epoch"] == cfg.refresh_epochs()[0] - 1, "val_miou"]
        trained = 100 * float(rows.iloc[-1]) if len(rows) else None
    d = evaluation.description
    out = [{"source": "nbseg, this run", "dataset": d["dataset"], "encoder": d["backbone_description"],
            "variant": d["variant"], "initial": 100 * m["pseudo_labels/miou"], "trained": trained,
            "bootstrapped": 100 * m["student/miou"]}]
    out += [{"source": PAPER_SOURCE, "dataset": name, "encoder": PAPER_SETTING["encoder"], "variant": "paper",
             "initial": a, "trained": b, "bootstrapped": c} for name, (a, b, c) in PAPER_TABLE_3.items()]
    return pd.DataFrame(out)


__all__ = ["concept_quality", "gradcam_examples", "table_3", "Prepared", "prepare", "training_dataset", "eval_labels",
           "pseudo_label_segmentation", "val_patches",
           "student_segmentation", "score", "epoch_evaluator", "TransFGUEvaluation", "evaluate_transfgu",
           "SMOKE_PROFILE", "SMOKE_VAL_LIMIT"]
