"""AlignSeg workflows shared by notebook ``10_alignseg``, the ``nbseg train / evaluate`` commands and the benchmark.

* :func:`load_alignseg_config` - a shipped config (``"world"``, ``"voc"``) or a YAML file, plus ``key=value``
  overrides (unknown keys are errors).
* :func:`train_alignseg` - train, or resume, a run folder through :func:`nbseg.train.fit` (re-running resumes).
* :func:`load_alignseg` - rebuild a trained model from a run folder or checkpoint (clear error for a checkpoint of
  another model, or for other backbone weights than those it was trained on).
* :func:`evaluate_alignseg` - AlignSeg end to end beside per-image and dataset-level k-means on the *same* frozen
  features, each scored with both protocols: dataset-level Hungarian (one confusion matrix over the split,
  one-to-one matching) and AlignSeg's released per-image many-to-one precision protocol at 100 x 100.
* :func:`run_alignseg` - train + evaluate + write ``metrics.json`` and ``evaluation.csv`` into the run folder.

Every table carries the backbone (name, weights file and sha256), the dataset and the variant; numbers from the
embedded backbone on the world are never the paper's.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nbseg.errors import ConfigError
from nbseg.methods.alignseg import AlignSeg, AlignSegConfig, evaluation_dataset, segment, training_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED_CONFIGS = {"world": CONFIGS / "alignseg_world.yaml", "voc": CONFIGS / "alignseg_voc.yaml",
                   "cocostuff27": CONFIGS / "alignseg_cocostuff27.yaml"}
PER_IMAGE_SIZE = 100          # the released evaluation scores per image at 100 x 100 (docs Sec. 3.6)
METRICS_JSON = "metrics.json"
EVALUATION_CSV = "evaluation.csv"
PROTOCOLS = ("hungarian", "per-image")


# ----------------------------------------------------------------------------------------------------------
# Config, training, loading
# ----------------------------------------------------------------------------------------------------------

def config_file(config: str | Path | None) -> Path:
    """``None`` / ``"world"`` -> the shipped world config, ``"voc"`` / ``"cocostuff27"`` -> the paper's settings
    for those datasets (DINO ViT-S/16, released schedule), else the path."""
    if config is None:
        return SHIPPED_CONFIGS["world"]
    if str(config) in SHIPPED_CONFIGS:
        return SHIPPED_CONFIGS[str(config)]
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"AlignSeg config {path} does not exist: pass a YAML file, or one of the shipped names "
                          f"{sorted(SHIPPED_CONFIGS)}")
    return path


def load_alignseg_config(config: str | Path | None = None, overrides: dict | list | None = None) -> AlignSegConfig:
    """The resolved config: AlignSegConfig defaults <- ``config`` (see :func:`config_file`) <- ``overrides``
    (``{"n_prototypes": 5}`` or ``["n_prototypes=5"]``); unknown keys and bad values are errors."""
    from nbseg.config import load_config

    cfg = load_config(AlignSegConfig, config_file(config), overrides)
    cfg.validate()
    return cfg


def train_alignseg(cfg: AlignSegConfig, run_dir: str | Path, *, progress: bool = True, backbone=None,
                   feature_cache=None, epoch_eval: tuple | None = None) -> tuple[AlignSeg, dict]:
    """Train AlignSeg in ``run_dir``; an existing run folder is resumed exactly (a finished one is only loaded).

    Args:
        cfg: the resolved config (stored in the run folder and the checkpoint; a resume with other values than the
            run's, except the free keys such as ``max_steps``, is refused).
        backbone: an already loaded backbone to reuse (must be the one ``cfg`` names).
        feature_cache: a :class:`~nbseg.methods.alignseg.CropFeatureCache` shared between runs (speed only).
        epoch_eval: ``(features, dataset)``: a :class:`nbseg.probes.FeatureSet` of a labelled split and the split;
            if given, AlignSeg is scored on it with both protocols at every epoch end (``run_dir/metrics.csv``).
    Returns:
        (method, summary of :func:`nbseg.train.fit`).
    """
    from nbseg.data.multicrop import collate_multicrop
    from nbseg.train import fit

    method = AlignSeg(cfg, backbone=backbone)
    method.feature_cache = feature_cache
    scores = None
    if epoch_eval is not None:
        features, dataset = epoch_eval
        scores = functools.partial(epoch_scores, features=features, n_classes=dataset.num_classes)
    summary = fit(method, training_dataset(cfg), cfg, run_dir, collate_fn=collate_multicrop, progress=progress,
                  evaluate=scores)
    method.feature_cache = None
    return method.eval(), summary


def epoch_scores(method: AlignSeg, features, n_classes: int) -> dict[str, float]:
    """mIoU of AlignSeg on ``features`` under both protocols (the per-epoch curve in ``metrics.csv``)."""
    from nbseg.evaluation import evaluate

    preds = predict_features(method, features)
    labels = list(features.labels)
    K = method.cfg.n_prototypes
    return {"val_hungarian_miou": evaluate(list(preds), labels, K, n_classes, protocol="hungarian").miou,
            "val_per_image_miou": evaluate(list(preds), labels, K, n_classes, protocol="per-image",
                                           eval_size=PER_IMAGE_SIZE).miou}


def load_alignseg(path: str | Path, *, weights: str | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[AlignSeg, AlignSegConfig, dict]:
    """Rebuild a trained AlignSeg from a run folder or ``checkpoint.pt``: the config stored in the checkpoint, its
    backbone (``weights`` replaces the stored weights path, e.g. on another machine; the sha256 must match), then the
    decoder. Raises :class:`nbseg.train.CheckpointError` for a missing / corrupt file or a checkpoint of another
    model, naming it. Returns (method in eval mode, config, checkpoint dict)."""
    import dataclasses

    from nbseg.train import build_from_checkpoint

    def factory(cfg: AlignSegConfig) -> AlignSeg:
        if weights is not None:
            cfg = dataclasses.replace(cfg, weights=str(weights))
        return AlignSeg(cfg, device=device)

    method, cfg, state = build_from_checkpoint(path, AlignSegConfig, factory, expected_kind="AlignSeg")
    return method, method.cfg, state


# ----------------------------------------------------------------------------------------------------------
# Prediction and scores
# ----------------------------------------------------------------------------------------------------------

def predict_features(method: AlignSeg, features, batch_size: int = 64) -> torch.Tensor:
    """AlignSeg labels (N, H, W) int64 at ``features.image_size`` from cached frozen tokens (a
    :class:`nbseg.probes.FeatureSet`): Eq. (1)-(3), identical to ``method.predict(features.images)`` since the
    backbone is frozen."""
    out = []
    for start in range(0, len(features.patches), batch_size):
        sim = method.token_similarity(features.patches[start:start + batch_size])
        out.append(segment(sim, features.image_size).cpu())
    return torch.cat(out) if out else torch.empty(0, *features.image_size, dtype=torch.long)


def image_prototypes(method: AlignSeg, features, batch_size: int = 64) -> torch.Tensor:
    """The image-adapted prototypes P^x (N, K, D) of every image of ``features`` (Eq. 1)."""
    return torch.cat([method.image_prototypes(features.patches[s:s + batch_size]).cpu()
                      for s in range(0, len(features.patches), batch_size)])


def score_rows(preds: torch.Tensor, features, dataset, n_clusters: int, method: str, **extra) -> list[dict]:
    """Two rows (dataset-level Hungarian at the label resolution; per-image many-to-one precision at 100 x 100)
    for one segmentation (N, H, W) of ``features``' images; ``extra`` columns are added to both."""
    from nbseg.evaluation import evaluate

    rows = []
    for protocol in PROTOCOLS:
        size = PER_IMAGE_SIZE if protocol == "per-image" else None
        r = evaluate(list(preds), list(features.labels), n_clusters, dataset.num_classes, protocol=protocol,
                     class_names=dataset.class_names, ignore_index=dataset.ignore_index, eval_size=size)
        rows.append({"method": method, "K": n_clusters, "protocol": protocol,
                     "scored_at": f"{size}x{size}" if size else "x".join(map(str, features.image_size)),
                     "miou": r.miou, "pixel_acc": r.pixel_acc,
                     "miou_excl_first": r.miou_excl_first if protocol == "per-image" else None,
                     "n_images": r.n_images, **extra})
    return rows


@dataclass
class KMeansBaselines:
    """Per-image and dataset-level k-means segmentations (N, H, W) of a FeatureSet and their score rows."""

    per_image: torch.Tensor
    dataset: torch.Tensor
    k_per_image: int
    k_dataset: int
    rows: list[dict]


def kmeans_baselines(features, dataset, k_per_image: int, k_dataset: int | None = None, *, seed: int = 0
                     ) -> KMeansBaselines:
    """Per-image k-means (each image alone, K = ``k_per_image``) and dataset-level k-means (one clustering of every
    patch of the split, K = ``k_dataset``, default ``k_per_image``) on the frozen patch tokens, cosine metric, each
    scored with both protocols (paper Fig. 9: AlignSeg vs per-image k-means)."""
    from nbseg.probes import kmeans_segmentation

    k_dataset = k_dataset or k_per_image
    per_image = kmeans_segmentation(features.patches, k_per_image, scope="image", size=features.image_size,
                                    seed=seed)
    whole = kmeans_segmentation(features.patches, k_dataset, scope="dataset", size=features.image_size, seed=seed)
    rows = (score_rows(per_image, features, dataset, k_per_image, "per-image k-means", evaluation="Clustering")
            + score_rows(whole, features, dataset, k_dataset, "dataset k-means", evaluation="Clustering"))
    return KMeansBaselines(per_image, whole, k_per_image, k_dataset, rows)


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
            if r["protocol"] == "per-image" and r.get("miou_excl_first") is not None:
                out[f"{name}/{r['protocol']}/miou_excl_first"] = float(r["miou_excl_first"])
        out.update(self.extra)
        return out


def describe(method: AlignSeg, dataset) -> dict:
    """What produced a result: method, variant, backbone (name, weights file, sha256), dataset and the settings
    Table II varies (K, L, v_l, loss weights, h, epochs, batch size, seed)."""
    bb = method.backbone
    return {"method": "AlignSeg", "variant": method.cfg.variant, "backbone": bb.describe(),
            "weights_sha256": method.provenance()["weights_sha256"], "random_init": bool(bb.random_init),
            "dataset": dataset.describe(), "K": method.cfg.n_prototypes, "L": method.cfg.n_layers,
            "v_l": method.cfg.n_local, "h": method.cfg.h, "alpha": method.cfg.alpha, "beta": method.cfg.beta,
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
    from nbseg.probes import extract_dataset

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
    rows = score_rows(preds, features, dataset, K, f"AlignSeg ({method.cfg.variant})", evaluation="End-to-End")
    baselines = None
    if kmeans is True:
        baselines = kmeans_baselines(features, dataset, k_per_image or K, k_dataset or k_per_image or K, seed=seed)
    elif isinstance(kmeans, KMeansBaselines):
        baselines = kmeans
    if baselines is not None:
        rows += [dict(r) for r in baselines.rows]
    import pandas as pd

    table = pd.DataFrame(rows).assign(backbone=desc["backbone"], dataset=desc["dataset"], variant=desc["variant"])
    return AlignSegEvaluation(table=table, predictions=preds, features=features, dataset=dataset,
                              description=desc, kmeans=baselines)


@dataclass
class AlignSegRun:
    """What :func:`run_alignseg` produced: the trained ``method``, its ``evaluation`` (None when not evaluated),
    the ``metrics`` written to ``run_dir/metrics.json`` and the training ``summary``."""

    method: AlignSeg
    evaluation: AlignSegEvaluation | None
    metrics: dict
    summary: dict
    run_dir: Path


def run_alignseg(cfg: AlignSegConfig, run_dir: str | Path, *, progress: bool = True, evaluate: bool = True,
                 eval_limit: int | None = None, epoch_eval: bool = False, feature_cache=None,
                 kmeans: bool = True) -> AlignSegRun:
    """Train (or resume) ``run_dir`` with ``cfg``, then score it on ``cfg.eval_split`` (the first ``eval_limit``
    images) with both protocols, beside per-image and dataset-level k-means (``kmeans``), and write
    ``run_dir/metrics.json`` (flat: what produced it, the variant, ``alignseg/<protocol>/miou`` ..., the baselines,
    training steps and time) and ``run_dir/evaluation.csv``. ``epoch_eval`` also scores AlignSeg at every epoch end
    (``run_dir/metrics.csv``)."""
    from nbseg.io import atomic_write_json, atomic_write_text
    from nbseg.probes import extract_dataset

    from nbseg.config import to_dict
    from nbseg.train.run_folder import check_before_work

    run_dir = Path(run_dir)
    check_before_work(run_dir, "AlignSeg", to_dict(cfg))  # a wrong folder or changed key: now, not after extraction
    eval_set = features = backbone = None
    if evaluate or epoch_eval:
        from nbseg.backbones import load

        backbone = load(cfg.backbone, cfg.weights, random_init=cfg.random_init)
        eval_set = evaluation_dataset(cfg)
        features = extract_dataset(backbone, eval_set, limit=eval_limit, progress=progress)
    method, summary = train_alignseg(cfg, run_dir, progress=progress, backbone=backbone,
                                     feature_cache=feature_cache,
                                     epoch_eval=(features, eval_set) if epoch_eval else None)
    metrics = {"run_dir": str(run_dir), "steps": summary["steps"], "total_steps": summary["total_steps"],
               "finished": summary["finished"], "train_seconds": round(summary["seconds"], 1),
               "final_loss": summary["loss"]}
    result = None
    if evaluate:
        result = evaluate_alignseg(method, eval_set, features=features, kmeans=kmeans, seed=cfg.seed,
                                   progress=progress)
        metrics = {**result.metrics(), **metrics}
        atomic_write_text(run_dir / EVALUATION_CSV, result.table.to_csv(index=False))
    else:
        metrics = {**describe(method, training_dataset(cfg)), **metrics}
    atomic_write_json(run_dir / METRICS_JSON, metrics)
    return AlignSegRun(method=method, evaluation=result, metrics=metrics, summary=summary, run_dir=run_dir)


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
           "kmeans_baselines", "score_rows", "AlignSegEvaluation", "KMeansBaselines", "epoch_scores", "describe",
           "PER_IMAGE_SIZE"]
