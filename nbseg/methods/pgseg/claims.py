"""The paper's Table-4 claim measured on the world, as a library function (``benchmarks/pgseg.py`` and a claims hook
call it): "NPR improves zero-shot segmentation" - the same data, steps and seeds for GroupViT alone, + I-NPR,
+ T-NPR, + hard rejection; zero-shot mIoU on the full labels (13 names) and the voc labels (background threshold
from train); synonym prompts; compactness and richness (Fig. 5-6). Also the zero-shot inference throughput
against the encoder alone.

The claim is called *supported* on a label set when the full model's mean mIoU exceeds GroupViT's by more than the
larger of the two seed standard deviations (:func:`gain_over_std`); otherwise the table says it is not.
:func:`pgseg_claims` is the row of ``nbseg claims`` (:mod:`nbseg.claims`): GroupViT alone against the full model
(+ I-NPR + T-NPR + hard rejection), same data, steps and seed, zero-shot mIoU on the full labels, judged by that rule
(and *not supported* when the gain is below minus the std).
"""
from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nbseg.claims import Claim, Measurement
from nbseg.methods.base import get_method
from nbseg.methods.pgseg.ablations import TABLE4
from nbseg.methods.pgseg.paper import PAPER_TABLE_4
from nbseg.methods.workflow import ablation_config, run_method

COLUMNS = {"pgseg/full/miou": "full mIoU %", "pgseg/voc/miou": "voc mIoU %",
           "pgseg/full/synonyms_miou": "synonyms full mIoU %", "pgseg/full/hungarian_miou": "full Hungarian mIoU %",
           "kmeans/full/miou": "k-means full mIoU %", "pgseg/compactness": "compactness",
           "pgseg/richness": "richness", "pgseg/groups_per_image": "groups per image",
           "pgseg/largest_group_share": "largest group share", "pgseg/voc/bg_threshold": "bg threshold (train)",
           "train_seconds": "train s"}


@dataclass
class Table4Result:
    """``runs`` (one row per (ablation, seed)), ``summary`` (mean and std per ablation, the paper's number beside
    it, labelled) and ``verdict`` ({label set: {"gain", "std", "supported"}})."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    verdict: dict

    def metrics(self) -> dict:
        out = {}
        for _, r in self.summary.iterrows():
            for col in ("full mIoU %", "voc mIoU %", "synonyms full mIoU %", "compactness", "richness"):
                out[f"table4/{r['ablation']}/{col} mean"] = r[f"{col} mean"]
                out[f"table4/{r['ablation']}/{col} std"] = r[f"{col} std"]
        for labels, v in self.verdict.items():
            out.update({f"table4/claim/{labels}/{k}": val for k, val in v.items()})
        return out


def table4_claim(out_dir: str | Path, *, seeds=(0, 1, 2), ablations=tuple(TABLE4), config=None,
                 overrides: dict | None = None, eval_limit: int | None = None, progress: bool = False,
                 jobs: int = 1) -> Table4Result:
    """Train and score every ablation of ``ablations`` (names of ``nbseg.methods.pgseg.ablations.ABLATIONS``) for
    every seed in ``out_dir/<ablation>/seed<k>`` (rerunning resumes; finished runs are only re-scored), with
    ``overrides`` common to all runs. ``jobs`` > 1: the (ablation, seed) runs go to that many worker processes
    (seed-major order, so every ablation advances together; each worker gets ``threads // jobs`` torch threads)
    and the table is collected from their ``metrics.json``. Returns :class:`Table4Result`."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    units = [(name, seed) for seed in seeds for name in ablations]
    if jobs > 1:
        threads = max(1, torch.get_num_threads() // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_unit, out_dir, name, seed, config, overrides, eval_limit, threads)
                       for name, seed in units]
            for future in futures:
                future.result()                         # a failed run raises here, naming its error
        return collect_table4(out_dir, seeds=seeds, ablations=ablations)
    by_unit = {unit: _train_unit(out_dir, *unit, config, overrides, eval_limit, progress=progress)
               for unit in units}
    return _result([by_unit[(name, seed)] for name in ablations for seed in seeds], ablations)


def _train_unit(out_dir, name: str, seed: int, config, overrides: dict | None, eval_limit: int | None,
                threads: int | None = None, progress: bool = False) -> dict:
    """Train (or resume) and score one (ablation, seed) run; its :func:`_row`. ``threads``: torch threads (a worker
    process of :func:`table4_claim`)."""
    if threads:
        torch.set_num_threads(threads)
    spec = get_method("pgseg")
    cfg = ablation_config(spec, name, config=config, overrides={**(overrides or {}), "seed": seed})
    run = run_method(spec, cfg, Path(out_dir) / name / f"seed{seed}", progress=progress, eval_limit=eval_limit)
    return _row(name, seed, cfg.variant, run.metrics)


def collect_table4(out_dir: str | Path, *, seeds=(0, 1, 2), ablations=tuple(TABLE4)) -> Table4Result:
    """:func:`table4_claim`'s result from the finished runs' ``metrics.json`` in ``out_dir/<ablation>/seed<k>``,
    without training or re-scoring (e.g. rows run by separate commands, or one variant after the other)."""
    rows = []
    for name in ablations:
        for seed in seeds:
            path = Path(out_dir) / name / f"seed{seed}" / "metrics.json"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run table4_claim (benchmarks/pgseg.py) for "
                                        f"{name!r}, seed {seed} first")
            metrics = json.loads(path.read_text())
            rows.append(_row(name, seed, metrics["variant"], metrics))
    return _result(rows, ablations)


def _row(name: str, seed: int, variant: str, metrics: dict) -> dict:
    return {"ablation": name, "seed": seed, "variant": variant, "steps": metrics["steps"],
            "backbone": metrics.get("backbone_description"), "dataset": metrics.get("dataset"),
            **{col: _percent(key, metrics.get(key)) for key, col in COLUMNS.items()}}


def _result(rows: list[dict], ablations) -> Table4Result:
    runs = pd.DataFrame(rows)
    return Table4Result(runs=runs, summary=summarise(runs), verdict=variant_verdicts(runs, ablations))


def _percent(key: str, value):
    return 100 * value if value is not None and "miou" in key else value


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 1) over seeds per ablation, in ``runs`` order, with the paper's Table-4 row."""
    # a measure no run has (metrics.json from before it existed) is left out, not summarised as NaN
    cols = [c for c in COLUMNS.values() if c in runs and runs[c].notna().any()]
    grouped = runs.groupby("ablation", sort=False)[cols]
    table = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=1).add_suffix(" std")).reset_index()
    table.insert(1, "variant", runs.groupby("ablation", sort=False)["variant"].first().values)
    table.insert(2, "seeds", runs.groupby("ablation", sort=False).size().values)
    paper = {name: PAPER_TABLE_4[row] for name, (_, row) in TABLE4.items()}
    table["paper VOC mIoU % (derived from the paper's stated gains; not ours)"] = [
        paper.get(n.split(":")[-1]) for n in table["ablation"]]
    return table


def gain_over_std(base, full) -> dict:
    """The Table-4 rule on per-seed scores of GroupViT alone (``base``) and an NPR model (``full``): ``gain`` (mean
    difference), ``std`` (the larger of the two seed stds, ddof 1) and ``supported`` (gain > std, 2+ seeds each)."""
    a, b = np.asarray(base, dtype=float), np.asarray(full, dtype=float)
    std = float(max(np.std(a, ddof=1) if len(a) > 1 else 0.0, np.std(b, ddof=1) if len(b) > 1 else 0.0))
    gain = float(b.mean() - a.mean())
    return {"gain": gain, "std": std, "supported": bool(gain > std and len(a) > 1 and len(b) > 1)}


def variant_verdicts(runs: pd.DataFrame, ablations) -> dict:
    """:func:`verdict` of each variant's last row against the first (GroupViT alone, the same in both variants):
    keys ``full`` / ``voc`` for the paper variant, ``official/full`` / ``official/voc`` for the released one."""
    last = {}
    for name in ablations[1:]:
        last[runs.loc[runs["ablation"] == name, "variant"].iloc[0]] = name
    out = {}
    for variant, full in last.items():
        prefix = "" if variant == "paper" else f"{variant}/"
        out.update({prefix + labels: v for labels, v in verdict(runs, ablations[0], full).items()})
    return out


def verdict(runs: pd.DataFrame, base: str, full: str) -> dict:
    """Per label set: the gain of ``full`` over ``base`` (mean mIoU, points), the larger seed std, supported?"""
    return {labels: gain_over_std(runs.loc[runs["ablation"] == base, col], runs.loc[runs["ablation"] == full, col])
            for labels, col in (("full", "full mIoU %"), ("voc", "voc mIoU %"))}


# ----------------------------------------------------------------------------------------------------------
# The claims-table row
# ----------------------------------------------------------------------------------------------------------

# Sizes per profile. smoke: the method's smoke profile on a tiny world (tests); full: the world config's encoder on
# the first 2000 image-caption pairs (the default world's train split) for 2 epochs of batch 32 (126 steps), NPR from
# epoch 1.5 (the paper's last 1/4). A seed at 512 pairs (32 steps a run) took 94 CPU s (1 thread), 0.67 s a step.
CLAIM_SETTINGS = {
    "smoke": {"train": None, "eval": 8},
    "full": {"train": {"train_limit": 2000, "batch_size": 32, "epochs": 2, "warmup_epochs": 0.1,
                       "npr_start_epoch": 1.5, "checkpoint_every": 32, "threshold_images": 50, "device": "cpu"},
             "eval": 150},
}
CLAIM_ARMS = {"GroupViT alone": "groupvit", "+ I-NPR + T-NPR + HRS": "inpr+tnpr+hrs"}
CLAIM_RULE = ("pgseg (the issue's Table-4 rule, gain_over_std on the full-label mIoU): supported if mean(NPR) - "
              "mean(GroupViT) > the larger seed std; not supported if it is below minus that std; else inconclusive")


def _claim_measure(ctx, seed: int) -> Measurement:
    from nbseg.methods.pgseg import SMOKE_PROFILE     # here: the package imports this module

    sizes = ctx.pick(CLAIM_SETTINGS)
    result = table4_claim(ctx.run_dir("pgseg"), seeds=(seed,), ablations=tuple(CLAIM_ARMS.values()),
                          overrides={**(sizes["train"] or SMOKE_PROFILE), **ctx.data_overrides(backbone=False)},
                          eval_limit=sizes["eval"])
    runs = result.runs.set_index("ablation")
    values = {label: runs.loc[name, "full mIoU %"] / 100 for label, name in CLAIM_ARMS.items()}
    first, last = values.values()
    return Measurement(last - first, values, f"{runs['backbone'].iloc[-1]} on the world's captions (no pretrained "
                                             "model)", f"{runs['dataset'].iloc[0]} (first {sizes['eval']} images)")


def _claim_judge(per_seed) -> str:
    base, full = ([100 * v[label] for v in per_seed] for label in CLAIM_ARMS)
    r = gain_over_std(base, full)
    return "supported" if r["supported"] else "not supported" if r["gain"] < -r["std"] else "inconclusive"


def pgseg_claims() -> list[Claim]:
    """The row PGSeg adds to the claims table (``MethodSpec.claims``)."""
    rows = list(PAPER_TABLE_4.items())
    return [Claim(
        key="pgseg/npr-improves-zero-shot", method="pgseg",
        claim="prototypical regularisation (I-NPR + T-NPR + hard rejection) improves GroupViT's zero-shot "
              "segmentation, same data and steps",
        paper_evidence=f"paper's Table 4 (PASCAL VOC 2012 val, ViT-S/16 GroupViT, CC12M + RedCaps12M; cumulative rows "
                       f"derived from the stated gains): {rows[0][0]} {rows[0][1]}, {rows[-1][0]} {rows[-1][1]} mIoU",
        measure=_claim_measure, effect="NPR - GroupViT alone, zero-shot mIoU",
        protocol="zero-shot by class name (13 full-label names, identity mapping, no matching)",
        averaging="classes present in the ground truth", variant="paper (Table 4's switches; lambda = beta = 0 "
                                                                  "for the first 3/4 of training)",
        judge=_claim_judge, rule=CLAIM_RULE)]


@torch.no_grad()
def zero_shot_throughput(model, images: torch.Tensor, repeats: int = 5) -> dict:
    """Images/s of zero-shot segmentation (``predict``: encoder, both assignments, prompt affinities, upsampling)
    against the encoder alone (``forward_features`` + image embedding) on ``images`` (B, 3, H, W); the best of
    ``repeats`` timings each, taken in turns so that both see the same load of a shared machine, in wall time
    (``ratio``) and in this process's CPU time (``cpu ratio``); prompt embeddings are cached, as in any batch run
    after the first."""
    model.eval()
    images = images.to(model.device)
    model.predict(images[:1])                                   # warm-up; fills the prompt cache

    def encoder():
        out = model.image_encoder.forward_features(images)
        model.image_encoder.image_embedding(out.tokens)

    timed = {"encoder": encoder, "zero-shot": lambda: model.predict(images)}
    wall, cpu = ({name: [] for name in timed} for _ in range(2))
    for _ in range(repeats):
        for name, fn in timed.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    enc, zs = (len(images) / min(wall[name]) for name in timed)
    # CPU seconds of this process: less sensitive than wall time to other jobs on a shared machine
    cpu_enc, cpu_zs = (min(cpu[name]) for name in timed)
    return {"encoder images/s": enc, "zero-shot images/s": zs, "ratio": zs / enc, "cpu ratio": cpu_enc / cpu_zs,
            "batch": len(images), "threads": torch.get_num_threads()}


__all__ = ["table4_claim", "collect_table4", "Table4Result", "summarise", "verdict", "variant_verdicts",
           "gain_over_std", "zero_shot_throughput", "pgseg_claims", "COLUMNS", "CLAIM_SETTINGS", "CLAIM_ARMS",
           "CLAIM_RULE"]
