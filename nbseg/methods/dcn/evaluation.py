"""DCN's evaluation and the workflows notebook ``11_dcn``, the commands and ``benchmarks/dcn_world.py`` share.

* :func:`load_dcn_config` / :func:`notebook_config` - a shipped config (``"world"``, ``"voc"``) or a YAML file plus
  overrides (unknown keys are errors); the notebook's smoke profile.
* :func:`train_dcn` / :func:`load_dcn` - the generic :mod:`nbseg.methods.workflow` functions with DCN's spec
  (training builds the feature cache first when absent; rerunning resumes; a finished run is only loaded).
* :func:`evaluate_dcn` - the paper's evaluation on a labelled split: DCN regions at the image size, region
  embeddings, foreground detection (:mod:`nbseg.methods.dcn.regions`), Table 1 (k-means of foreground regions, mean
  and std over seeds) beside dataset-level k-means on the patch tokens, Table 2 (weighted k-NN against the training
  regions), and the region-count analysis (regions per image against ground-truth classes per image).
* :class:`DCNEvaluation` - the results as DataFrames (:meth:`~DCNEvaluation.table_1`, :meth:`~DCNEvaluation.table_2`,
  :meth:`~DCNEvaluation.region_counts`, :meth:`~DCNEvaluation.count_correlations`), flat ``metrics.json`` entries
  and a text ``report()``.
* :func:`open_choices` - the choices the paper leaves open, as written in :mod:`nbseg.methods.dcn.model` and
  :mod:`nbseg.methods.dcn.regions` (the notebook shows this list).

The paper's numbers (:mod:`nbseg.methods.dcn.paper`) are copied from its text (Li et al. 2022, PASCAL VOC 2012 val,
DINO ViT-S/8) and every table labels them as the paper's; nbseg's rows name the backbone, its weights and the
dataset. Numbers from the embedded backbone on the world are never the paper's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from nbseg.errors import ConfigError
from nbseg.evaluation.baselines import dataset_kmeans_over_seeds as patch_kmeans_baseline
from nbseg.methods import workflow
from nbseg.methods.base import get_method
from nbseg.methods.dcn.choices import open_choices, open_choices_markdown
from nbseg.methods.dcn.model import DCN, DCNConfig, feature_cache, open_split
from nbseg.methods.dcn.paper import (PAPER_DCN_ROW, PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_1, PAPER_TABLE_2)
from nbseg.methods.dcn.regions import (HEAD_RULES, collect_regions, foreground_by_rule, kmeans_region_labels,
                                       kmeans_table, knn_table, paint, region_count_correlation)
from nbseg.runs import backbone_facts

SMOKE_PROFILE = {"cache_limit": 64, "batch_size": 16, "max_steps": 24, "epochs": 6, "log_every": 2,
                 "checkpoint_every": 12}
SMOKE_VAL_LIMIT = 32               # images scored in the smoke profile
SMOKE_GALLERY_LIMIT = 32           # training images in the smoke profile's k-NN gallery
SMOKE_SEEDS = 3
KS = (1, 3, 5, 10)
# What each table's numbers mean (correction 7 of issue 15), printed beside them.
TABLE_1_PROTOCOL = ("dataset-level Hungarian over the scored split; the background regions form one more cluster, "
                    "which takes part in the matching; k-means runs on the scored split's own regions")
TABLE_2_PROTOCOL = ("weighted k-NN against training regions labelled by the training ground truth (supervised, as in "
                    "the paper); identity matching")
PATCH_KMEANS_PROTOCOL = "dataset-level Hungarian; k-means of the scored split's patch tokens into C clusters"
AVERAGING = "mIoU %: classes present in the gt; mIoU STEGO %: present or predicted (a predicted absent class = 0)"


# ----------------------------------------------------------------------------------------------------------
# Config, training, loading: the generic workflow with DCN's spec
# ----------------------------------------------------------------------------------------------------------

def config_path(config: str | Path | None = None) -> Path:
    """None / ``"world"`` -> ``configs/dcn_world.yaml``, ``"voc"`` -> ``configs/dcn_voc.yaml``, else the YAML path
    (which must exist)."""
    return get_method("dcn").config_file(config)


def load_dcn_config(config: str | Path | None = None, overrides: dict | list | None = None) -> DCNConfig:
    """DCNConfig defaults <- ``config`` (:func:`config_path`: ``"world"`` (default), ``"voc"`` (the paper's VOC
    settings) or a YAML path) <- ``overrides`` (``{"n_stages": 3}`` or ``["n_stages=3"]``). Validated."""
    return workflow.load_method_config(get_method("dcn"), config, overrides)


def train_images(cfg: DCNConfig) -> int:
    """How many images DCN trains on: the training split, cut to ``cache_limit``."""
    n = len(open_split(cfg))
    return n if cfg.cache_limit is None else min(n, cfg.cache_limit)


def notebook_config(config: str | Path | None, overrides: dict, *, smoke: bool = False, max_steps: int | None = None,
                    limit: int | None = None) -> DCNConfig:
    """The config notebook ``11_dcn`` trains with: ``config`` <- :data:`SMOKE_PROFILE` when ``smoke`` (64 images,
    batch 16, 24 steps) <- ``overrides`` <- ``max_steps`` / ``limit`` (training images) when given. When
    ``max_steps`` needs more epochs than the config holds, the epochs are raised to hold them."""
    values = dict(SMOKE_PROFILE) if smoke else {}
    values.update(overrides)
    if limit is not None:
        values["cache_limit"] = limit
    if max_steps is not None:
        values["max_steps"] = max_steps
    cfg = load_dcn_config(config, values)
    if cfg.max_steps is not None:
        per_epoch = max(1, train_images(cfg) // cfg.batch_size)
        cfg.epochs = max(cfg.epochs, math.ceil(cfg.max_steps / per_epoch))
    return cfg


def train_dcn(cfg: DCNConfig, run_dir: str | Path, *, backbone=None, progress: bool = True) -> tuple[DCN, dict]:
    """Train DCN in ``run_dir`` on the cached features of ``cfg``'s training split (the cache is built first when
    absent, see :func:`nbseg.methods.dcn.model.feature_cache`). An existing run folder is resumed exactly
    (``max_steps`` may grow); a finished run is only loaded. Returns (method in eval mode, summary)."""
    return workflow.train_method(get_method("dcn"), cfg, run_dir, progress=progress, backbone=backbone)


def load_dcn(path: str | Path, *, weights: str | None = None, device: str | torch.device = "cpu"
             ) -> tuple[DCN, DCNConfig, dict]:
    """Rebuild a trained DCN from a run folder or ``checkpoint.pt``: the stored config, its backbone (``weights``
    replaces the stored path; the sha256 must match), the decoder. Returns (method in eval mode, config,
    checkpoint)."""
    _, method, cfg, state = workflow.load_trained(path, weights=weights, device=device, spec=get_method("dcn"))
    return method, cfg, state


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------

def _finite(value):
    """NaN -> None (metrics.json stays valid JSON)."""
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class DCNEvaluation:
    """DCN on a labelled split.

    ``val`` / ``gallery``: :class:`~nbseg.methods.dcn.regions.RegionSplit` of the evaluated split and of the training
    images the k-NN classifier retrieves from; ``table1``: :class:`~nbseg.methods.dcn.regions.SeedTable`;
    ``baseline``: dataset-level k-means on the patch tokens (:func:`nbseg.evaluation.dataset_kmeans_over_seeds`);
    ``table2``: ``{k: EvalResult}``; ``counts``: region-count correlations
    (:func:`~nbseg.methods.dcn.regions.region_count_correlation`) by label set / area filter; ``gt_full``: the world's
    things-and-stuff labels of the evaluated images (None elsewhere); ``description``: backbone, weights, dataset.
    """

    method: Any
    val: Any
    gallery: Any
    patches: torch.Tensor
    table1: Any
    baseline: dict
    table2: dict
    counts: dict
    description: dict
    n_fg_classes: int
    seeds: list
    gt_full: list | None = None
    table1_by_rule: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def report(self) -> str:
        """Tables 1 and 2 as text (the paper's rows labelled as such), with the backbone and dataset."""
        fmt = lambda v: f"{v:.2f}"          # noqa: E731
        short = lambda t: t.drop(columns="protocol")      # noqa: E731  (the protocols are printed once, below)
        return "\n".join([self.title(), short(self.table_1()).to_string(index=False, float_format=fmt),
                          f"Table 1: {TABLE_1_PROTOCOL}. Baseline: {PATCH_KMEANS_PROTOCOL}.",
                          short(self.table_2()).to_string(index=False, float_format=fmt),
                          f"Table 2: {TABLE_2_PROTOCOL}.", AVERAGING])

    @property
    def table(self):
        """Table 1 then Table 2 in one long DataFrame (``evaluation.csv``)."""
        return pd.concat([self.table_1().assign(table="Table 1"), self.table_2().assign(table="Table 2")],
                         ignore_index=True)

    def title(self) -> str:
        """Backbone (name, weights) and dataset, for figure titles."""
        return f"{self.description['backbone']} · {self.description['dataset']}"

    @property
    def n_images(self) -> int:
        return len(self.val.maps)

    def regions_per_image(self) -> torch.Tensor:
        """(N,) int64: the dynamic number of regions of each evaluated image."""
        return self.val.regions.per_image(self.n_images)

    def semantic_maps(self, seed_index: int = 0) -> list[torch.Tensor]:
        """The unsupervised semantic segmentation of Fig. 4 (second row): the k-means run of ``seeds[seed_index]``
        painted on the regions, clusters mapped to classes by its Hungarian matching (255 where unmatched)."""
        r = self.val.regions
        values = kmeans_region_labels(r.embedding, r.foreground, self.n_fg_classes, self.seeds[seed_index])
        mapping = torch.as_tensor(self.table1.results[seed_index].mapping, dtype=torch.long)
        lut = torch.where(mapping >= 0, mapping, torch.full_like(mapping, 255))
        return [lut[m] for m in paint(self.val.maps, r, values)]

    # ---- tables --------------------------------------------------------------------------------------------
    def table_1(self):
        """Table 1, long format (mIoU % mean and std): the paper's rows, labelled as the paper's, then this run's
        DCN + k-means and the dataset-level k-means baseline, labelled with backbone, weights and dataset."""
        ours = {name: name == PAPER_DCN_ROW for name, _, _ in PAPER_TABLE_1}
        rows = [{"source": PAPER_SOURCE, "method": name, "encoder": PAPER_SETTING["encoder"] if ours[name] else "",
                 "dataset": PAPER_SETTING["dataset"], "protocol": "as reported", "miou %": miou, "std %": std,
                 "k-means runs": 10 if ours[name] else None} for name, miou, std in PAPER_TABLE_1]
        fg = self.description["foreground"]
        runs = [(f"DCN regions + k-means (foreground {fg})", self.table1.summary(), TABLE_1_PROTOCOL)]
        runs += [(f"DCN regions + k-means (foreground {rule})", t.summary(), TABLE_1_PROTOCOL)
                 for rule, t in self.table1_by_rule.items() if rule != fg]
        runs.append(("dataset-level k-means of patch tokens (baseline)", self.baseline, PATCH_KMEANS_PROTOCOL))
        for name, s, protocol in runs:
            rows.append({"source": "nbseg, this run", "method": name, "encoder": self.description["backbone"],
                         "dataset": self.description["dataset"], "protocol": protocol,
                         "miou %": 100 * s["miou_mean"], "std %": 100 * s["miou_std"],
                         "miou STEGO %": 100 * s["miou_stego_mean"], "k-means runs": len(self.seeds)})
        return pd.DataFrame(rows).astype({"k-means runs": "Int64"})

    def table_2(self):
        """Table 2, long format: weighted k-NN region classification per k, the paper's rows then this run's."""
        rows = [{"source": PAPER_SOURCE, "k": k, "encoder": PAPER_SETTING["encoder"],
                 "dataset": PAPER_SETTING["dataset"], "protocol": "as reported (supervised k-NN)", "miou %": miou,
                 "acc %": acc} for k, (miou, acc) in PAPER_TABLE_2.items()]
        rows += [{"source": "nbseg, this run", "k": k, "encoder": self.description["backbone"],
                  "dataset": self.description["dataset"], "protocol": TABLE_2_PROTOCOL, "miou %": 100 * r.miou,
                  "miou STEGO %": 100 * r.miou_over("stego"), "acc %": 100 * r.pixel_acc}
                 for k, r in self.table2.items()]
        return pd.DataFrame(rows)

    def region_counts(self):
        """One row per evaluated image: regions, foreground regions, regions of at least 1% of the image, and the
        ground-truth classes present (scored label set; the world's things-and-stuff set when available)."""
        r = self.val.regions
        n = self.n_images
        big = region_count_correlation(self.val.maps, self.val.gt, min_fraction=0.01)["n_regions"]
        table = pd.DataFrame({"image": self.val.ids,
                              "regions": r.per_image(n).tolist(),
                              "foreground regions": torch.bincount(r.image[r.foreground], minlength=n).tolist(),
                              "regions >= 1%": big,
                              "gt classes": self.counts["gt"]["n_gt_classes"]})
        if "full" in self.counts:
            table["gt classes (full labels)"] = self.counts["full"]["n_gt_classes"]
        return table

    def count_correlations(self):
        """One row per comparison: Pearson / Spearman of regions per image against ground-truth classes per image,
        and the mean regions per image."""
        return pd.DataFrame([{"comparison": name, "pearson": c["pearson"], "spearman": c["spearman"],
                              "mean regions": c["mean_regions"]} for name, c in self.counts.items()])

    # ---- metrics.json ---------------------------------------------------------------------------------------
    def metrics(self) -> dict:
        """Flat entries: what produced them, ``table1/*`` (fractions), ``baseline_patch_kmeans/*``,
        ``table2/k=K/*``, ``regions/*``, ``correlation/<comparison>/*`` and the paper's numbers (``paper/*``, in %
        as printed)."""
        out = dict(self.description)
        t1 = self.table1.summary()
        out.update({f"table1/{k}": t1[k] for k in ("miou_mean", "miou_std", "pixel_acc_mean", "pixel_acc_std",
                                                    "miou_per_seed", "miou_stego_mean", "miou_stego_std")})
        for rule, table in self.table1_by_rule.items():
            summary = table.summary()
            out.update({f"table1/{rule}/{k}": summary[k] for k in ("miou_mean", "miou_std", "miou_stego_mean")})
        out["table1/n_seeds"] = len(self.seeds)
        out.update({f"baseline_patch_kmeans/{k}": v for k, v in self.baseline.items()})
        out["dcn_minus_baseline_miou"] = t1["miou_mean"] - self.baseline["miou_mean"]
        for k, r in self.table2.items():
            out[f"table2/k={k}/miou"], out[f"table2/k={k}/pixel_acc"] = r.miou, r.pixel_acc
        per_image = self.regions_per_image()
        out.update({"regions/mean": float(per_image.float().mean()), "regions/min": int(per_image.min()),
                    "regions/max": int(per_image.max()), "regions/histogram": torch.bincount(per_image).tolist(),
                    "regions/total": len(self.val.regions),
                    "regions/foreground_fraction": float(self.val.regions.foreground.float().mean()),
                    "knn_gallery/images": len(self.gallery.maps), "knn_gallery/regions": len(self.gallery.regions)})
        for name, c in self.counts.items():
            out.update({f"correlation/{name}/{k}": _finite(c[k]) for k in ("pearson", "spearman", "mean_regions")})
            out[f"correlation/{name}/mean_regions_by_gt_classes"] = {
                str(k): v for k, v in c["mean_regions_by_gt_classes"].items()}
        out["paper/source"] = f"{PAPER_SOURCE}: {PAPER_SETTING['dataset']}, {PAPER_SETTING['encoder']}"
        out["paper/table1/miou_mean_percent"], out["paper/table1/miou_std_percent"] = PAPER_TABLE_1[-1][1:]
        for k, (miou, acc) in PAPER_TABLE_2.items():
            out[f"paper/table2/k={k}/miou_percent"], out[f"paper/table2/k={k}/pixel_acc_percent"] = miou, acc
        out.update(self.extra)
        return out


def evaluate_dcn(method: DCN, *, split: str = "val", val_limit: int | None = None,
                 gallery_limit: int | None = None, seeds: Sequence[int] = range(10), ks: Sequence[int] = KS,
                 progress: bool = True) -> DCNEvaluation:
    """The paper's evaluation of a trained DCN on ``split`` of its config's dataset.

    Args:
        method: a trained :class:`DCN` (its config names the data, the cache and the region settings).
        split: the labelled split scored (the paper: VOC 2012 val).
        val_limit: score the first N images only (their features are cached under that limit).
        gallery_limit: the k-NN gallery: regions of the first N training images (default: the images DCN trained
            on). Their labels come from the ground truth (the paper's "region-level annotations" assumption).
        seeds: one k-means per seed for Table 1 and the baseline (the paper: 10 runs, mean +- std).
        ks: Table 2's k.
    Returns:
        :class:`DCNEvaluation`.
    """
    cfg, backbone = method.cfg, method.backbone
    dataset = open_split(cfg, split)
    n = len(dataset) if val_limit is None else min(val_limit, len(dataset))
    cache = feature_cache(cfg, backbone, split, progress=progress, limit=n)
    val = collect_regions(method.predict_features, backbone, dataset, cache, region_size=cfg.region_size,
                          progress=progress, foreground=cfg.foreground)
    if any(g is None for g in val.gt):
        raise ConfigError(f"{dataset.describe()} has no labels: DCN's tables need a labelled split")
    n_classes, ignore = dataset.num_classes, dataset.ignore_index
    n_fg = cfg.n_fg_classes or n_classes - 1
    seeds = list(seeds)
    table1 = kmeans_table(val.regions, val.maps, val.gt, n_classes=n_classes, n_fg_classes=n_fg, seeds=seeds,
                          class_names=dataset.class_names, ignore_index=ignore)
    table1_by_rule = {}                   # the three head reductions of Sec. 4.1.2 on the same regions
    for rule in HEAD_RULES:
        regions = val.regions.select(torch.ones(len(val.regions), dtype=torch.bool))
        regions.score, regions.foreground = foreground_by_rule(val.attn, val.maps, regions, rule)
        table1_by_rule[rule] = table1 if rule == cfg.foreground else kmeans_table(
            regions, val.maps, val.gt, n_classes=n_classes, n_fg_classes=n_fg, seeds=seeds,
            class_names=dataset.class_names, ignore_index=ignore)
    patches = torch.from_numpy(np.asarray(cache.patches[:n], np.float32))
    baseline = patch_kmeans_baseline(patches, val.gt, n_classes, seeds, ignore_index=ignore)

    train_cache = feature_cache(cfg, backbone, progress=progress)          # the images DCN trained on
    gallery = collect_regions(method.predict_features, backbone, open_split(cfg), train_cache,
                              region_size=cfg.region_size, limit=gallery_limit, progress=progress,
                              foreground=cfg.foreground)
    table2 = knn_table(gallery.regions, val.regions, val.maps, val.gt, n_classes=n_classes, ks=ks,
                       class_names=dataset.class_names, ignore_index=ignore)

    counts = {"gt": region_count_correlation(val.maps, val.gt, ignore_index=ignore),
              "gt, regions >= 1%": region_count_correlation(val.maps, val.gt, ignore_index=ignore, min_fraction=0.01)}
    gt_full = None
    if cfg.data == "world" and cfg.labels != "full":          # things and stuff: what a scene holds
        full = open_split(replace(cfg, labels="full"), split)
        gt_full = [full[i].label for i in range(n)]
        counts["full"] = region_count_correlation(val.maps, gt_full)
        counts["full, regions >= 1%"] = region_count_correlation(val.maps, gt_full, min_fraction=0.01)
    facts = backbone_facts(backbone)
    scored = dataset.describe() + (f", first {n} scored" if n < len(dataset) else "")
    description = {"method": "DCN", "backbone": facts["backbone_description"],
                   "weights_sha256": facts["weights_sha256"], "random_init": bool(facts["random_init"]),
                   "dataset": scored, "n_images": n, "label_set": getattr(dataset, "label_set", ""),
                   "n_prototypes": cfg.n_prototypes, "n_stages": cfg.n_stages, "n_fg_classes": n_fg,
                   "input_size": cfg.input_size, "region_size": cfg.region_size,
                   "foreground": cfg.foreground}
    return DCNEvaluation(method=method, val=val, gallery=gallery, patches=patches, table1=table1, baseline=baseline,
                         table2=table2, counts=counts, description=description, n_fg_classes=n_fg, seeds=seeds,
                         gt_full=gt_full, table1_by_rule=table1_by_rule)


__all__ = ["config_path", "load_dcn_config", "notebook_config", "train_images", "train_dcn", "load_dcn", "evaluate_dcn",
           "DCNEvaluation", "patch_kmeans_baseline", "open_choices", "open_choices_markdown", "PAPER_TABLE_1",
           "PAPER_TABLE_2", "PAPER_SOURCE", "PAPER_SETTING", "SMOKE_PROFILE", "SMOKE_VAL_LIMIT",
           "SMOKE_GALLERY_LIMIT", "SMOKE_SEEDS", "KS"]
