"""What every method does the same way, written once and driven by its :class:`~nbseg.methods.base.MethodSpec`.

* :func:`load_method_config` - spec config defaults <- a shipped config or YAML <- ``key=value`` overrides.
* :func:`train_method` - train, or resume, a run folder through :func:`nbseg.train.fit` (rerunning resumes).
* :func:`load_trained` - rebuild a trained model from a run folder or checkpoint; the checkpoint's recorded kind picks
  the method from the registry (clear error for a kind nobody registered, or for other backbone weights).
* :func:`run_method` - train + evaluate on the config's evaluation split + write ``metrics.json`` (and the
  evaluation table as ``evaluation.csv``) into the run folder.
* :func:`ablation_configs` / :func:`run_ablations` / :func:`collect_ablations` - a method's named ablations, each a
  :func:`run_method` in ``OUT/<name>/<run folder>``, collected into one table beside the paper's numbers.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nbseg.config import load_config, to_dict
from nbseg.errors import ConfigError, NbsegError
from nbseg.io import atomic_write_json, atomic_write_text
from nbseg.methods.base import MethodSpec, frozen_backbone, get_method, method_for_kind, method_names
from nbseg.train import CheckpointError, build_from_checkpoint, fit, load_checkpoint
from nbseg.train.run_folder import check_before_work

METRICS_JSON = "metrics.json"
EVALUATION_CSV = "evaluation.csv"
ABLATION_TABLE = "ablations.csv"


# ----------------------------------------------------------------------------------------------------------
# Config, training, loading
# ----------------------------------------------------------------------------------------------------------

def load_method_config(spec: MethodSpec, config: str | Path | None = None, overrides: dict | list | None = None):
    """The resolved, validated config: ``spec.config_class`` defaults <- ``config`` (None / ``"world"``, another
    shipped name, or a YAML path) <- ``overrides`` (``{"n_prototypes": 5}`` or ``["n_prototypes=5"]``; unknown keys
    and bad values are errors)."""
    cfg = load_config(spec.config_class, spec.config_file(config), overrides)
    cfg.validate()
    return cfg


def train_method(spec: MethodSpec, cfg, run_dir: str | Path, *, progress: bool = True, backbone=None,
                 epoch_scores=None, device: str | torch.device = "cpu", setup=None) -> tuple[Any, dict]:
    """Train ``spec``'s model with ``cfg`` in ``run_dir``; an existing run folder is resumed exactly (a finished one
    is only loaded). ``backbone``: an already loaded frozen backbone to reuse; ``epoch_scores(model) -> dict``:
    scored at every epoch end (``run_dir/metrics.csv``); ``setup(model)``: called on the model before training
    (e.g. to attach a speed-only cache). Returns (model in eval mode, summary of :func:`nbseg.train.fit`).
    A run folder of another kind, or a changed config key, is refused before any data is read."""
    check_before_work(run_dir, spec.kind, to_dict(cfg))
    model = spec.model_class(cfg, backbone=backbone, device=device)
    if setup is not None:
        setup(model)
    summary = fit(model, spec.training_dataset(cfg, model, progress=progress), cfg, run_dir,
                  collate_fn=spec.collate_fn, progress=progress, evaluate=epoch_scores)
    return model.eval(), summary


def load_trained(path: str | Path, *, weights: str | None = None, device: str | torch.device = "cpu",
                 spec: MethodSpec | None = None) -> tuple[MethodSpec, Any, Any, dict]:
    """Rebuild a trained model from a run folder or ``checkpoint.pt``: the method from the checkpoint's recorded
    kind (or ``spec``, which must match it), the config stored in the checkpoint, its backbone (``weights``
    replaces the stored weights path, e.g. on another machine; the sha256 must match), then the trained parts.
    Returns (spec, model in eval mode, config, checkpoint dict)."""
    if spec is None:
        kind = load_checkpoint(path)["kind"]
        try:
            spec = method_for_kind(kind, path)
        except ConfigError:
            kinds = " or ".join(repr(get_method(n).kind) for n in method_names())
            raise CheckpointError(f"{path} is a checkpoint of {kind!r}, not of {kinds}: no registered method "
                                  f"({', '.join(method_names())}) builds it") from None

    def factory(cfg):
        if weights is not None:
            cfg = dataclasses.replace(cfg, weights=str(weights))
        return spec.model_class(cfg, device=device)

    model, cfg, state = build_from_checkpoint(path, spec.config_class, factory, expected_kind=spec.kind)
    return spec, model, model.cfg, state


# ----------------------------------------------------------------------------------------------------------
# Train + evaluate a run folder
# ----------------------------------------------------------------------------------------------------------

@dataclass
class MethodRun:
    """What :func:`run_method` produced: the trained ``model``, its ``evaluation`` (None when not evaluated), the
    ``metrics`` written to ``run_dir/metrics.json`` and the training ``summary``."""

    model: Any
    evaluation: Any
    metrics: dict
    summary: dict
    run_dir: Path

    @property
    def method(self):
        """The trained model (the notebooks' name for it)."""
        return self.model


def run_method(spec: MethodSpec, cfg, run_dir: str | Path, *, progress: bool = True, evaluate: bool = True,
               eval_limit: int | None = None, epoch_eval: bool = False, kmeans: bool = True, setup=None,
               extra_metrics: dict | None = None) -> MethodRun:
    """Train (or resume) ``run_dir`` with ``cfg``, then score it with ``spec.evaluate`` on the config's evaluation
    split (the first ``eval_limit`` images; ``kmeans``: with the k-means baselines where the method has them) and
    write ``run_dir/metrics.json`` (the evaluation's metrics, then the training steps, time and final loss, then
    ``extra_metrics``) and ``run_dir/evaluation.csv``. ``epoch_eval`` also scores the model at every epoch end
    (``run_dir/metrics.csv``; methods with an ``epoch_evaluator``)."""
    run_dir = Path(run_dir)
    backbone = epoch_scores = None
    if epoch_eval:
        if spec.epoch_evaluator is None:
            raise ConfigError(f"{spec.title} has no per-epoch evaluation (--epoch-eval)")
        check_before_work(run_dir, spec.kind, to_dict(cfg))      # before the features are extracted
        backbone = frozen_backbone(cfg)
        epoch_scores = spec.epoch_evaluator(cfg, backbone, limit=eval_limit, progress=progress)
    model, summary = train_method(spec, cfg, run_dir, progress=progress, backbone=backbone,
                                  epoch_scores=epoch_scores, setup=setup)
    training = {"run_dir": str(run_dir), "steps": summary["steps"], "total_steps": summary["total_steps"],
                "finished": summary["finished"], "train_seconds": round(summary["seconds"], 1),
                "final_loss": summary["loss"]}
    result = None
    if evaluate:
        result = spec.evaluate(model, limit=eval_limit, kmeans=kmeans, progress=progress)
        metrics = {**result.metrics(), **training}
        atomic_write_text(run_dir / EVALUATION_CSV, result.table.to_csv(index=False))
    else:
        metrics = {**model.provenance(), **training}
    metrics.update(extra_metrics or {})
    atomic_write_json(run_dir / METRICS_JSON, metrics)
    return MethodRun(model=model, evaluation=result, metrics=metrics, summary=summary, run_dir=run_dir)


# ----------------------------------------------------------------------------------------------------------
# Ablations
# ----------------------------------------------------------------------------------------------------------

def ablation_names(spec: MethodSpec, names=None, *, smoke: bool = False) -> list[str]:
    """``names`` checked against ``spec.ablations`` (default: all, or ``spec.smoke_ablations`` with ``smoke``)."""
    names = list(names) if names else list(spec.smoke_ablations if smoke else spec.ablations)
    unknown = [n for n in names if n not in spec.ablations]
    if unknown:
        raise ConfigError(f"unknown {spec.name} ablation(s) {unknown}; choose from {list(spec.ablations)}")
    return names


def ablation_config(spec: MethodSpec, name: str, *, config: str | Path | None = None, smoke: bool = False,
                    overrides: dict | None = None):
    """The config of ablation ``name``: ``config`` <- the smoke profile (``smoke``) <- ``overrides`` (common to
    every run) <- the ablation's own overrides (and its smoke overrides); then its ``epoch_scale``."""
    ablation = spec.ablations[name]
    values = {**(spec.smoke if smoke else {}), **(overrides or {}), **ablation.overrides,
              **(ablation.smoke_overrides if smoke else {})}
    cfg = load_method_config(spec, config, values)
    if ablation.epoch_scale != 1:
        cfg.epochs *= int(ablation.epoch_scale)
    return cfg


def run_ablations(spec: MethodSpec, out_dir: str | Path, names=None, *, profile: str = "smoke",
                  config: str | Path | None = None, overrides: dict | None = None, eval_limit: int | None = None,
                  progress: bool = True) -> pd.DataFrame:
    """Run ``spec``'s ablations ``names`` (default: all; the smoke profile's list under ``profile="smoke"``), each a
    :func:`run_method` in ``out_dir/<name>/<spec.ablation_run_folder>`` (rerunning resumes; scored on the first
    ``eval_limit`` images, default the smoke profile's number under ``"smoke"``), then collect them with
    :func:`collect_ablations` into ``out_dir/<spec.ablation_table>`` and return the table. A failing run does not
    stop the others; the table's ``status`` column reports it."""
    if profile not in ("smoke", "full"):
        raise ConfigError(f"profile must be 'smoke' or 'full', got {profile!r}")
    smoke = profile == "smoke"
    out_dir = Path(out_dir)
    names = ablation_names(spec, names, smoke=smoke)
    failures = {}
    for name in names:
        print(f"{spec.name} ablation {name!r}: {json.dumps(dict(spec.ablations[name].overrides), sort_keys=True)}",
              flush=True)
        try:
            cfg = ablation_config(spec, name, config=config, smoke=smoke, overrides=overrides)
            run_method(spec, cfg, out_dir / name / spec.ablation_run_folder, progress=progress,
                       eval_limit=eval_limit or (spec.smoke_eval_limit if smoke else None),
                       extra_metrics={"smoke": smoke})
        except (NbsegError, FileNotFoundError, RuntimeError, ValueError) as err:
            failures[name] = f"{type(err).__name__}: {err}"
    table = collect_ablations(spec, out_dir, names)
    for name, reason in failures.items():
        table.loc[table["ablation"] == name, "status"] = f"failed: {reason.splitlines()[0].strip()}"
    atomic_write_text(out_dir / spec.ablation_table, table.to_csv(index=False))
    return table


def collect_ablations(spec: MethodSpec, out_dir: str | Path, names) -> pd.DataFrame:
    """One row per ablation: its overrides, the settings and scores of its ``metrics.json`` (columns from
    ``spec.ablation_columns``; those ending in ``%`` scaled by 100), what produced it, and the paper's number for the
    same change (labelled as the paper's). A run without ``metrics.json`` gets a row whose ``status`` says so. With
    ``spec.ablation_delta_column``, two more columns: each row's difference to the ``baseline`` ablation, and the
    paper's difference for the same change."""
    rows = []
    for name in names:
        ablation = spec.ablations[name]
        path = Path(out_dir) / name / spec.ablation_run_folder / METRICS_JSON
        row = {"ablation": name, "parameters": json.dumps(ablation.parameters(), sort_keys=True)}
        if path.is_file():
            m = json.loads(path.read_text())
            row["status"] = "ok"
            for key, column in spec.ablation_columns.items():
                value = m.get(key)
                if column.endswith("%") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = 100 * value
                row[column] = value
            row.update({"backbone": m.get("backbone"), "dataset": m.get("dataset"), "smoke": m.get("smoke")})
        else:
            row["status"] = f"no metrics.json at {path}"
        row.update({"paper row": ablation.paper_row, spec.paper_column: ablation.paper_value})
        rows.append(row)
    table = pd.DataFrame(rows)
    column = spec.ablation_delta_column
    if column and column in table and (table["ablation"] == "baseline").any():
        # settings that differ from the paper's (e.g. K) make absolute numbers incomparable: compare differences
        base = pd.to_numeric(table.loc[table["ablation"] == "baseline", column], errors="coerce").iloc[0]
        table[f"Δ {column} vs baseline (ours)"] = pd.to_numeric(table[column], errors="coerce") - base
        table["Δ vs the paper's baseline (paper)"] = [
            None if a.paper_value is None or a.paper_baseline is None else round(a.paper_value - a.paper_baseline, 2)
            for a in (spec.ablations[n] for n in table["ablation"])]
    return table


__all__ = ["load_method_config", "train_method", "load_trained", "run_method", "MethodRun", "ablation_names",
           "ablation_config", "run_ablations", "collect_ablations", "METRICS_JSON", "EVALUATION_CSV"]
