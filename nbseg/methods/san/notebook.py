"""The workflows notebook ``14_san`` calls (kept here so the notebook stays thin): its config and smoke profile,
training in stages (a resumed run folder; segmentations after each stage), the frozen-backbone rows beside SAN on
the same split, and Tables 2-5 beside the paper's numbers (labelled as the paper's; ours say "SAN trained from
scratch, no pretrained model" and name the data)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from nbseg import backbones
from nbseg.evaluation.baselines import kmeans_baselines
from nbseg.features.extract import extract_dataset
from nbseg.methods import workflow
from nbseg.methods.base import get_method
from nbseg.methods.san import SMOKE_PROFILE
from nbseg.methods.san.ablations import TABLE5_ABLATIONS
from nbseg.methods.san.data import open_split
from nbseg.methods.san.evaluation import MODEL_LABEL, label_sets, predict_split
from nbseg.methods.san.paper import (PAPER_SOURCE, PAPER_TABLE_2, PAPER_TABLE_3, PAPER_TABLE_4)

# the spec's smoke profile, with 6 steps in 3 stages of 2 (a checkpoint at each)
NOTEBOOK_SMOKE = {**SMOKE_PROFILE, "max_steps": 6, "log_every": 1, "checkpoint_every": 2}
OURS = "nbseg, this run"


def notebook_config(config, overrides: dict, *, smoke: bool = False, max_steps: int | None = None):
    """``config`` <- :data:`NOTEBOOK_SMOKE` when ``smoke`` <- ``overrides`` <- ``max_steps``; the epochs are raised
    to hold ``max_steps`` when needed."""
    values = {**(NOTEBOOK_SMOKE if smoke else {}), **overrides}
    if max_steps is not None:
        values["max_steps"] = max_steps
    cfg = workflow.load_method_config(get_method("san"), config, values)
    if cfg.max_steps is not None:
        n = len(open_split(cfg)) if cfg.limit is None else cfg.limit
        cfg.epochs = max(cfg.epochs, math.ceil(cfg.max_steps / max(1, n // cfg.batch_size)))
    return cfg


def train_in_stages(cfg, run_dir: str | Path, stages: int, images: list, *, progress: bool = True):
    """Train ``run_dir`` to ``cfg.max_steps`` in ``stages`` equal parts (each part resumes the run folder) and
    segment ``images`` after each. Returns (model, summary, ``{step: [(H, W) maps]}``)."""
    spec, total = get_method("san"), cfg.max_steps
    by_step, model, summary = {}, None, None
    for i in range(1, stages + 1):
        part = dataclasses.replace(cfg, max_steps=max(1, round(total * i / stages)))
        model, summary = workflow.train_method(spec, part, run_dir, progress=progress)
        by_step[summary["steps"]] = predict_split(model, images, "batch")
    return model, summary, by_step


def frozen_backbone_rows(cfg, *, limit: int | None = None, backbone: str = "embedded", progress: bool = False):
    """Dataset-level k-means (K = N) of a frozen ViT's patch tokens on the same split and label sets, Hungarian
    (the baseline every frozen-backbone method in nbseg is compared with), at the data's native size."""
    rows = []
    vit = backbones.load(backbone)
    for labels in label_sets(cfg):
        data = open_split(cfg, cfg.eval_split, labels=labels)
        features = extract_dataset(vit, data, limit=limit, progress=progress)
        result = kmeans_baselines(features, data, cfg.n_prototypes, seed=cfg.seed, per_image_size=None)
        for r in result.rows:
            if r["method"] == "dataset k-means" and r["protocol"] == "hungarian":
                rows.append({"method": f"dataset k-means of frozen {vit.describe()}", "labels": labels or data.name,
                             "K": cfg.n_prototypes, "pixel_acc": r["pixel_acc"], "miou": r["miou"],
                             "pretrained model": "yes (frozen)", "scored at": r["scored_at"]})
    return pd.DataFrame(rows)


def beside_frozen(evaluation, frozen: pd.DataFrame) -> pd.DataFrame:
    """SAN's rows (both test-time semantics) and the pixel baselines beside the frozen-backbone rows."""
    ours = evaluation.table.copy()
    ours["pretrained model"] = ours["key"].map(lambda k: "none (trained from scratch)" if k.startswith("san/")
                                                else "none (k-means of pixels)")
    ours["method"] = ours["method"] + ours["semantics"].map(lambda s: "" if s == "-" else f" [{s}]")
    columns = ["method", "labels", "K", "pixel_acc", "miou", "pretrained model"]
    return pd.concat([ours[columns], frozen[[c for c in columns if c in frozen]]], ignore_index=True)


def paper_tables(evaluation) -> pd.DataFrame:
    """Tables 2-4 as the paper reports them, with this run's SAN row where an analogue exists (the world's coarse
    labels stand for COCO-Stuff-3, its full labels for COCO-Stuff-27)."""
    rows = [{"table": "2 (COCO-Stuff-3 / Potsdam / COCO-Stuff-15)", "row": name, "source": PAPER_SOURCE,
             "acc %": f"{a} / {b} / {c}"} for name, (a, b, c) in PAPER_TABLE_2.items()]
    rows += [{"table": "3 (COCO-Stuff-27 / Cityscapes)", "row": name, "source": PAPER_SOURCE,
              "acc %": f"{a} / {b if b is not None else '-'}"} for name, (a, b) in PAPER_TABLE_3.items()]
    rows += [{"table": "4 (COCO-Stuff-3, backbones)", "row": name, "source": PAPER_SOURCE, "acc %": str(v)}
             for name, v in PAPER_TABLE_4.items()]
    t = evaluation.table
    for labels, table, analogue in (("coarse", "2", "COCO-Stuff-3"), ("full", "3", "COCO-Stuff-27")):
        hit = t[(t["key"] == "san/batch") & (t["labels"] == labels)]
        if len(hit):
            rows.append({"table": f"{table} (analogue: world {labels} ~ {analogue})", "row": "SAN",
                         "source": f"{OURS}: {MODEL_LABEL}, {evaluation.description['dataset']}, "
                                   f"P={evaluation.description['embed_dim']}",
                         "acc %": f"{100 * hit['pixel_acc'].iloc[0]:.1f}"})
    return pd.DataFrame(rows)


def table5_beside_paper(summary: pd.DataFrame, labels: str = "coarse") -> pd.DataFrame:
    """Table 5: each variant's mean +- std (over seeds) Hungarian accuracy and collapse diagnostics beside the
    paper's COCO-Stuff-3 accuracy (as reported)."""
    rows = []
    for _, r in summary.iterrows():
        v = r["variant"]
        ablation = TABLE5_ABLATIONS.get(v)
        acc = f"san/batch/{labels}/pixel_acc"
        rows.append({"variant": v, f"acc % ({labels}) mean": 100 * r.get(acc + " mean", float("nan")),
                     "std": 100 * r.get(acc + " std", float("nan")),
                     "clusters > 1%": r.get("san/batch/clusters_over_1pct mean"),
                     "largest cluster": r.get("san/batch/largest_cluster mean"),
                     "effective rank Q": r.get("san/batch/effective_rank mean"),
                     "collapsed (fraction of seeds)": r.get("collapsed mean"),
                     "paper acc % (COCO-Stuff-3, as reported)": ablation.paper_value if ablation else None})
    return pd.DataFrame(rows)


__all__ = ["NOTEBOOK_SMOKE", "notebook_config", "train_in_stages", "frozen_backbone_rows", "beside_frozen",
           "paper_tables", "table5_beside_paper"]
