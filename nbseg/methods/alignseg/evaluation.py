"""AlignSeg's evaluation and the workflows notebook ``10_alignseg``, the commands and the benchmark share.

* :func:`evaluate_alignseg` - AlignSeg end to end beside per-image and dataset-level k-means on the *same* frozen
  features (:func:`nbseg.evaluation.kmeans_baselines`), each scored with both protocols: dataset-level Hungarian
  (one confusion matrix over the split, one-to-one matching) and AlignSeg's released per-image many-to-one precision
  protocol at 100 x 100. :class:`AlignSegEvaluation` holds the table, ``metrics()`` and ``report()``.
* :func:`run_alignseg` - train + evaluate + write ``metrics.json`` and ``evaluation.csv`` into the run folder
  (:func:`nbseg.methods.workflow.run_method` with AlignSeg's spec); :func:`notebook_config` the notebook's config.
* :func:`load_alignseg_config` / :func:`train_alignseg` / :func:`load_alignseg` - the generic
  :mod:`nbseg.methods.workflow` functions with AlignSeg's spec.

Every table carries the backbone (name, weights file and sha256), the dataset and the variant; numbers from the
embedded backbone on the world are never the paper's.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nbseg.errors import ConfigError
from nbseg.evaluation import evaluate
from nbseg.evaluation.baselines import (BOTH_PROTOCOLS, PATH_NBSEG, PATH_RELEASED, PER_IMAGE_SIZE, RELEASED_PROTOCOL,
                                       KMeansBaselines, kmeans_baselines, score_row, score_rows)
from nbseg.features import extract_dataset
from nbseg.methods import workflow
from nbseg.methods.alignseg.model import AlignSeg, AlignSegConfig, evaluation_dataset
from nbseg.methods.base import get_method
from nbseg.prototype_scores import segment_by_argmax, segment_on_grid

PROTOCOLS = BOTH_PROTOCOLS


# ----------------------------------------------------------------------------------------------------------
# Config, training, loading: the generic workflow with AlignSeg's spec
# ----------------------------------------------------------------------------------------------------------

def config_file(config: str | Path | None) -> Path:
    """``None`` / ``"world"`` -> the shipped world config, ``"voc"`` / ``"cocostuff27"`` -> the paper's settings
    for those datasets (DINO ViT-S/16, released schedule), else the path."""
    return get_method("alignseg").config_file(config)


def load_alignseg_config(config: str | Path | None = None, overrides: dict | list | None = None) -> AlignSegConfig:
    """The resolved config: AlignSegConfig defaults <- ``config`` (see :func:`config_file`) <- ``overrides``
    (``{"n_prototypes": 5}`` or ``["n_prototypes=5"]``); unknown keys and bad values are errors."""
    return workflow.load_method_config(get_method("alignseg"), config, overrides)


def train_alignseg(cfg: AlignSegConfig, run_dir: str | Path, *, progress: bool = True, backbone=None,
                   feature_cache=None, epoch_eval: tuple | None = None) -> tuple[AlignSeg, dict]:
    """Train AlignSeg in ``run_dir``; an existing run folder is resumed exactly (a finished one is only loaded).
    ``feature_cache``: a :class:`~nbseg.methods.alignseg.CropFeatureCache` shared between runs (speed only);
    ``epoch_eval``: ``(features, dataset)`` to score AlignSeg on at every epoch end (``run_dir/metrics.csv``)."""
    scores = None
    if epoch_eval is not None:
        features, dataset = epoch_eval
        scores = functools.partial(epoch_scores, features=features, n_classes=dataset.num_classes)
    method, summary = workflow.train_method(get_method("alignseg"), cfg, run_dir, progress=progress,
                                            backbone=backbone, epoch_scores=scores,
                                            setup=_with_cache(feature_cache))
    method.feature_cache = None
    return method, summary


def _with_cache(cache):
    def setup(method: AlignSeg) -> None:
        method.feature_cache = cache
    return setup


def load_alignseg(path: str | Path, *, weights: str | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[AlignSeg, AlignSegConfig, dict]:
    """Rebuild a trained AlignSeg from a run folder or ``checkpoint.pt`` (:func:`nbseg.methods.workflow.load_trained`;
    a checkpoint of another model is a :class:`nbseg.train.CheckpointError` naming it). Returns (method in eval
    mode, config, checkpoint dict)."""
    _, method, cfg, state = workflow.load_trained(path, weights=weights, device=device, spec=get_method("alignseg"))
    return method, cfg, state


def epoch_scores(method: AlignSeg, features, n_classes: int) -> dict[str, float]:
    """mIoU of AlignSeg on ``features`` under both protocols (the per-epoch curve in ``metrics.csv``)."""
    preds = predict_features(method, features)
    labels = list(features.labels)
    K = method.cfg.n_prototypes
    return {"val_hungarian_miou": evaluate(list(preds), labels, K, n_classes, protocol="hungarian").miou,
            "val_per_image_miou": evaluate(list(preds), labels, K, n_classes, protocol="per-image",
                                           eval_size=PER_IMAGE_SIZE).miou}


def epoch_evaluator(cfg: AlignSegConfig, backbone, *, limit: int | None = None, progress: bool = True):
    """``model -> scores`` on the first ``limit`` images of the evaluation split (features extracted once)."""
    dataset = evaluation_dataset(cfg)
    features = extract_dataset(backbone, dataset, limit=limit, progress=progress)
    return functools.partial(epoch_scores, features=features, n_classes=dataset.num_classes)


# ----------------------------------------------------------------------------------------------------------
# Prediction and scores
# ----------------------------------------------------------------------------------------------------------

def predict_features(method: AlignSeg, features, batch_size: int = 64, *, released_size: int | None = None
                     ) -> torch.Tensor:
    """AlignSeg labels (N, H, W) int64 from cached frozen tokens (a :class:`nbseg.probes.FeatureSet`).

    Default (nbseg's path): Eq. (1)-(3) at ``features.image_size``, cosines upsampled bilinearly then argmax,
    identical to ``method.predict(features.images)`` since the backbone is frozen. ``released_size=100``: the
    released evaluation's path instead, argmax on the token grid and labels resized (nearest) to 100 x 100
    (:func:`nbseg.prototype_scores.segment_on_grid`)."""
    out = []
    for start in range(0, len(features.patches), batch_size):
        sim = method.scores_from_features(features.patches[start:start + batch_size])
        labels = (segment_by_argmax(sim, features.image_size) if released_size is None
                  else segment_on_grid(sim, released_size))
        out.append(labels.cpu())
    size = features.image_size if released_size is None else (released_size, released_size)
    return torch.cat(out) if out else torch.empty(0, *size, dtype=torch.long)


def image_prototypes(method: AlignSeg, features, batch_size: int = 64) -> torch.Tensor:
    """The image-adapted prototypes P^x (N, K, D) of every image of ``features`` (Eq. 1)."""
    return torch.cat([method.image_prototypes(features.patches[s:s + batch_size]).cpu()
                      for s in range(0, len(features.patches), batch_size)])


@dataclass
class AlignSegEvaluation:
    """AlignSeg (and the k-means baselines) on one labelled split.

    ``table``: one row per (method, protocol) with miou / pixel_acc (fractions), K, the backbone, the dataset and
    the variant; ``predictions``: AlignSeg labels (N, H, W); ``kmeans``: the baselines (or None); ``features``: the
    frozen features everything was computed from; ``description``: backbone, weights, dataset, variant.
    """

    table: Any
    predictions: torch.Tensor
    features: Any
    dataset: Any
    description: dict
    kmeans: KMeansBaselines | None = None
    extra: dict = field(default_factory=dict)

    def miou(self, method: str = "alignseg", protocol: str = "hungarian") -> float:
        """mIoU of ``method`` ("alignseg", "per-image k-means", "dataset k-means") under ``protocol``."""
        t = self.table
        name = t["method"].iloc[0] if method == "alignseg" else method
        row = t[(t["method"] == name) & (t["protocol"] == protocol)]
        if row.empty:
            raise KeyError(f"no row for {method!r} / {protocol!r}; methods: {sorted(set(t['method']))}")
        return float(row["miou"].iloc[0])

    def metrics(self) -> dict:
        """Flat ``metrics.json`` entries: the description plus ``<method>/<protocol>/miou`` and ``/pixel_acc``
        (``alignseg/...`` for AlignSeg)."""
        out = dict(self.description)
        for _, r in self.table.iterrows():
            name = "alignseg" if r["method"].startswith("AlignSeg") else r["method"]
            out[f"{name}/{r['protocol']}/miou"] = float(r["miou"])
            out[f"{name}/{r['protocol']}/pixel_acc"] = float(r["pixel_acc"])
            if r["protocol"].startswith("per-image") and r.get("miou_excl_first") is not None:
                out[f"{name}/{r['protocol']}/miou_excl_first"] = float(r["miou_excl_first"])
            if r.get("miou_stego") is not None and not pd.isna(r["miou_stego"]):
                out[f"{name}/{r['protocol']}/miou_stego"] = float(r["miou_stego"])
        out.update(self.extra)
        return out

    def report(self) -> str:
        """The scores as a text table (mIoU and pixel accuracy in %), with the backbone and dataset."""
        d = self.description
        shown = self.table.copy()
        for column in ("miou", "pixel_acc", "miou_excl_first", "miou_stego"):
            shown[column] = 100 * shown[column].astype(float)
        columns = ["method", "K", "protocol", "scored_at", "miou", "miou_stego", "pixel_acc", "miou_excl_first",
                   "n_images"]
        text = shown[columns].rename(columns={"miou": "mIoU %", "pixel_acc": "pixel acc %",
                                              "miou_stego": "mIoU STEGO avg %",
                                              "miou_excl_first": "mIoU excl. first %"}).to_string(
            index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")
        paths = "; ".join(f"{p}" for p in dict.fromkeys(self.table["path"]))
        return (f"AlignSeg ({d['variant']} variant, saliency {d.get('saliency', '?')})\nscored on {d['dataset']} "
                f"with {d['backbone']}\n{text}\nmIoU % averages the classes present in the ground truth; STEGO "
                f"avg also counts a predicted class absent from it as 0. {RELEASED_PROTOCOL}: the per-image "
                f"protocol on labels made as released. Label paths: {paths}")


def describe(method: AlignSeg, dataset) -> dict:
    """What produced a result: method, variant, backbone (name, weights file, sha256), dataset and the settings
    Table II varies (K, L, v_l, loss weights, h, epochs, batch size, seed)."""
    bb = method.backbone
    return {"method": "AlignSeg", "variant": method.cfg.variant, "backbone": bb.describe(),
            "weights_sha256": method.provenance()["weights_sha256"], "random_init": bool(bb.random_init),
            "dataset": dataset.describe(), "K": method.cfg.n_prototypes, "L": method.cfg.n_layers,
            "v_l": method.cfg.n_local, "h": method.cfg.h, "alpha": method.cfg.alpha, "beta": method.cfg.beta,
            "saliency": method.cfg.saliency if method.cfg.use_saliency else "none",
            "epochs": method.cfg.epochs, "batch_size": method.cfg.batch_size, "seed": method.cfg.seed}


def evaluate_alignseg(method: AlignSeg, dataset=None, *, features=None, limit: int | None = None,
                      kmeans: bool | KMeansBaselines = True, k_per_image: int | None = None,
                      k_dataset: int | None = None, seed: int = 0, progress: bool = True,
                      batch_size: int = 32) -> AlignSegEvaluation:
    """Score AlignSeg end to end, beside k-means on the same frozen features, with both protocols.

    Args:
        method: a trained AlignSeg (see :func:`load_alignseg`).
        dataset: the labelled split (default :func:`~nbseg.methods.alignseg.evaluation_dataset` of the method's
            config: ``eval_split`` resized to ``eval_size``).
        features: its frozen features (:func:`nbseg.probes.extract_dataset` with the method's backbone), to share
            them between several models; computed when None.
        limit: the first ``limit`` images only.
        kmeans: also run per-image and dataset-level k-means (True), reuse baselines computed before, or skip.
        k_per_image / k_dataset: their K (default: the number of prototypes, so every method has the same K).
    Returns:
        :class:`AlignSegEvaluation`.
    """
    dataset = dataset if dataset is not None else evaluation_dataset(method.cfg)
    if features is None:
        features = extract_dataset(method.backbone, dataset, limit=limit, progress=progress, batch_size=batch_size)
    if features.labels is None:
        raise ConfigError(f"{dataset.describe()} has no labels: AlignSeg can only be scored on a labelled split")
    desc = describe(method, dataset)
    if len(features.ids) < len(dataset):
        desc["dataset"] = f"{desc['dataset']}, first {len(features.ids)} scored"
    desc["n_images"] = len(features.ids)
    K = method.cfg.n_prototypes
    preds = predict_features(method, features)
    name = f"AlignSeg ({method.cfg.variant})"
    rows = score_rows(preds, features, dataset, K, name, evaluation="End-to-End", path=PATH_NBSEG)
    released = predict_features(method, features, released_size=PER_IMAGE_SIZE)     # the release's own path
    rows.append(score_row(released, features, dataset, K, name, "per-image", size=PER_IMAGE_SIZE,
                          label=RELEASED_PROTOCOL, evaluation="End-to-End", path=PATH_RELEASED))
    baselines = None
    if kmeans is True:
        baselines = kmeans_baselines(features, dataset, k_per_image or K, k_dataset or k_per_image or K, seed=seed)
    elif isinstance(kmeans, KMeansBaselines):
        baselines = kmeans
    if baselines is not None:
        rows += [dict(r) for r in baselines.rows]
    table = pd.DataFrame(rows).assign(backbone=desc["backbone"], dataset=desc["dataset"], variant=desc["variant"])
    return AlignSegEvaluation(table=table, predictions=preds, features=features, dataset=dataset,
                              description=desc, kmeans=baselines)


AlignSegRun = workflow.MethodRun


def run_alignseg(cfg: AlignSegConfig, run_dir: str | Path, *, progress: bool = True, evaluate: bool = True,
                 eval_limit: int | None = None, epoch_eval: bool = False, feature_cache=None,
                 kmeans: bool = True) -> workflow.MethodRun:
    """Train (or resume) ``run_dir`` with ``cfg``, then score it on ``cfg.eval_split`` (the first ``eval_limit``
    images) with both protocols, beside per-image and dataset-level k-means (``kmeans``), and write
    ``run_dir/metrics.json`` and ``run_dir/evaluation.csv`` (:func:`nbseg.methods.workflow.run_method`).
    ``epoch_eval`` also scores AlignSeg at every epoch end (``run_dir/metrics.csv``). The result's ``method`` is
    the trained model."""
    run = workflow.run_method(get_method("alignseg"), cfg, run_dir, progress=progress, evaluate=evaluate,
                              eval_limit=eval_limit, epoch_eval=epoch_eval, kmeans=kmeans,
                              setup=_with_cache(feature_cache))
    run.model.feature_cache = None
    return run


def notebook_config(config: str | Path | None, overrides: dict, *, smoke: bool = False, epochs: int | None = None,
                    epoch_scale: int = 1, train_limit: int | None = None) -> AlignSegConfig:
    """The config notebook ``10_alignseg`` trains with: ``config`` <- the smoke profile (64 train images, batch 16,
    2 epochs) when ``smoke`` <- ``overrides`` <- ``epochs`` / ``train_limit`` when given; then the epochs are
    multiplied by ``epoch_scale`` (Table II (c))."""
    values = {"max_train_images": 64, "batch_size": 16, "epochs": 2} if smoke else {}
    values.update({k: v for k, v in overrides.items()})
    if epochs is not None:
        values["epochs"] = epochs
    if train_limit is not None:
        values["max_train_images"] = train_limit
    cfg = load_alignseg_config(config, values)
    if epoch_scale != 1:
        if epoch_scale < 1:
            raise ConfigError(f"epoch_scale must be a positive integer, got {epoch_scale}")
        cfg.epochs *= int(epoch_scale)
    return cfg


__all__ = ["load_alignseg_config", "config_file", "train_alignseg", "load_alignseg", "evaluate_alignseg",
           "run_alignseg", "AlignSegRun", "notebook_config", "predict_features", "image_prototypes",
           "kmeans_baselines", "score_rows", "AlignSegEvaluation", "KMeansBaselines", "epoch_scores", "epoch_evaluator",
           "describe", "PER_IMAGE_SIZE"]
