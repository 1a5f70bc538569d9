"""Run every registered method's claims over seeds, cache each result, and write the claims table.

``OUT_DIR`` layout (``nbseg claims OUT_DIR``):

* ``claims_run.json`` - the run's profile, backbone and data root (a rerun with other ones is refused unless
  ``--overwrite``); the number of seeds may grow between reruns.
* ``results/<claim key>/seed<k>.json`` - one (claim, seed) measurement, written atomically the moment it is done:
  a killed run resumes from the next one, and a rerun with everything cached measures nothing.
* ``runs/...``, ``feature_cache/`` - the training runs and feature caches the measurements made (resumable).
* ``claims.csv`` (every column) and ``claims.md`` (the readable table, with the machine, date and times).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from nbseg.claims.base import Claim, ClaimContext, Measurement, judged
from nbseg.errors import ConfigError
from nbseg.io import atomic_write_json, atomic_write_text
from nbseg.progress import tqdm

MARKER = "claims_run.json"
CLAIMS_CSV = "claims.csv"
CLAIMS_MD = "claims.md"
OWNED = ("results", "runs", "feature_cache", CLAIMS_CSV, CLAIMS_MD, MARKER)   # what --overwrite removes
BACKBONE_NOTE = ("The embedded default backbone is nbseg's ViT-Tiny/8 weakly supervised by the world's captions, "
                 "not DINO; its numbers are never a paper's numbers.")


def all_claims(methods=None) -> list[Claim]:
    """The claims of every registered method (``MethodSpec.claims``), or of ``methods`` only; keys must be
    unique."""
    from nbseg.methods.base import get_method, method_names

    names = list(methods) if methods else method_names()
    claims: list[Claim] = []
    for name in names:
        spec = get_method(name)
        claims += list(spec.claims()) if spec.claims is not None else []
    keys = [c.key for c in claims]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"claim keys must be unique, got duplicates {sorted({k for k in keys if keys.count(k) > 1})}")
    return claims


def result_path(out_dir: Path, claim: Claim, seed: int) -> Path:
    return Path(out_dir) / "results" / claim.key / f"seed{seed}.json"


def _prepare(out_dir: Path, ctx: ClaimContext, overwrite: bool) -> None:
    """Create or check ``out_dir``: a folder of this command with the same settings resumes; a folder holding
    anything else is refused; ``overwrite`` removes what this command wrote there (only that)."""
    marker = out_dir / MARKER
    settings = {"profile": ctx.profile, "backbone": ctx.backbone_name, "weights": ctx.weights,
                "data_root": ctx.data_root}
    if overwrite and marker.is_file():           # only a folder this command made: a user's files are never removed
        for name in OWNED:
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    if marker.is_file():
        before = json.loads(marker.read_text())
        differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if differ:
            raise ConfigError(f"{out_dir} holds a claims run with other settings {differ} (before, now): pass "
                              "--overwrite to replace it, or choose another OUT_DIR")
        return
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} is not empty and holds no claims run ({MARKER}): choose an empty or new "
                          "OUT_DIR (nothing there is overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, settings)


def measure_once(claim: Claim, ctx: ClaimContext, seed: int) -> dict:
    """Run one (claim, seed) measurement, timed (wall and this process's CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    m = claim.measure(ctx, seed)
    if not isinstance(m, Measurement):
        raise TypeError(f"claim {claim.key}: measure must return a Measurement, got {type(m).__name__}")
    return {**m.to_dict(), "seed": seed, "claim": claim.key, "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu}


def run_claims(out_dir: str | Path, *, profile: str = "smoke", seeds: int = 3, overwrite: bool = False,
               data_root: str | None = None, methods=None, backbone: str = "embedded", weights: str | None = None,
               progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Measure every claim for seeds 0..``seeds``-1 in ``out_dir`` (resuming what is cached), write
    ``claims.csv`` and ``claims.md``, and return (the table, ``{"measured": n, "cached": n, "failed": n,
    "wall_s": s, "cpu_s": s}``). A failing measurement is reported in the table and not cached (a rerun retries)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    out_dir = Path(out_dir)
    ctx = ClaimContext(out_dir, profile=profile, data_root=data_root, backbone_name=backbone, weights=weights,
                       progress=False)
    claims = all_claims(methods)
    _prepare(out_dir, ctx, overwrite)
    stats = {"measured": 0, "cached": 0, "failed": 0, "wall_s": 0.0, "cpu_s": 0.0}
    failures: dict[tuple[str, int], str] = {}
    todo = [(seed, c) for seed in range(seeds) for c in claims if not result_path(out_dir, c, seed).is_file()]
    stats["cached"] = seeds * len(claims) - len(todo)
    bar = tqdm(total=len(todo), desc="claims", unit="measurement", disable=not progress)
    for seed in range(seeds):
        for claim in [c for s, c in todo if s == seed]:
            bar.set_postfix_str(f"{claim.key} seed {seed}")
            try:
                result = measure_once(claim, ctx, seed)
            except Exception as err:                           # one failure must not lose the other rows
                failures[(claim.key, seed)] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                stats["failed"] += 1
            else:
                atomic_write_json(result_path(out_dir, claim, seed), result)
                stats["measured"] += 1
                stats["wall_s"] += result["wall_s"]
                stats["cpu_s"] += result["cpu_s"]
            bar.update(1)
        ctx.end_seed(seed)
    bar.close()
    table = claims_table(out_dir, claims, seeds, failures)
    atomic_write_text(out_dir / CLAIMS_CSV, table.to_csv(index=False))
    atomic_write_text(out_dir / CLAIMS_MD, claims_markdown(table, ctx, seeds))
    return table, stats


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _pm(values, digits: int = 2) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def claims_table(out_dir: Path, claims: list[Claim], seeds: int, failures: dict | None = None) -> pd.DataFrame:
    """One row per claim from the cached results of seeds 0..``seeds``-1 (see the module docstring)."""
    failures = failures or {}
    rows = []
    for claim in claims:
        results = [json.loads(p.read_text()) for seed in range(seeds)
                   if (p := result_path(out_dir, claim, seed)).is_file()]
        effects = [claim.scale * r["effect"] for r in results]
        labels = list(results[0]["values"]) if results else []
        measurement = "; ".join(f"{label} {_pm([claim.scale * r['values'][label] for r in results])}"
                                for label in labels)
        decided, rule = judged(claim, effects, [r["values"] for r in results])
        failed = [f"seed {s}: {msg}" for (key, s), msg in sorted(failures.items()) if key == claim.key]
        mean, std = _mean_std(effects) if effects else (float("nan"), float("nan"))
        rows.append({
            "claim id": claim.key, "method": claim.method, "claim": claim.claim,
            "paper's evidence (as reported by the paper)": claim.paper_evidence,
            "our measurement (mean ± std over seeds)": f"{measurement} ({claim.unit})" if results else "not measured",
            "effect": f"{_pm(effects)} ({claim.effect})" if results else "",
            "effect mean": mean, "effect std": std, "seeds": len(results),
            "per-seed effects": json.dumps([round(e, 4) for e in effects]),
            "backbone": results[0]["backbone"] if results else "", "dataset": results[0]["dataset"] if results else "",
            "protocol": claim.protocol, "averaging": claim.averaging, "variant": claim.variant,
            "verdict": decided, "rule": rule, "failures": "; ".join(failed),
            "wall s": sum(r["wall_s"] for r in results), "cpu s": sum(r["cpu_s"] for r in results)})
    return pd.DataFrame(rows)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_markdown(table: pd.DataFrame, ctx: ClaimContext, seeds: int) -> str:
    """The readable claims table: setting first (machine, date, profile, backbone note), then one row per claim."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node() or 'unknown host'}, {platform.machine()}, {os.cpu_count()} CPUs visible"
    lines = ["# Claims table", "",
             f"Profile `{ctx.profile}`, {seeds} seeds; written {when} on {machine}. {BACKBONE_NOTE} "
             "The paper's evidence column is the paper's own numbers, in the paper's setting; every other number is "
             "nbseg's, measured here.", "",
             "| claim | paper's evidence (as reported) | our measurement (mean ± std) | effect | setting | verdict |",
             "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        setting = (f"{r['backbone']}; {r['dataset']}; protocol: {r['protocol']}; averaging: {r['averaging']}; "
                   f"variant: {r['variant']}; {r['seeds']} seeds")
        verdict_text = r["verdict"] + (f" ({r['failures']})" if r["failures"] else "")
        lines.append("| " + " | ".join(_cell(v) for v in (
            f"**{r['method']}**: {r['claim']}", r["paper's evidence (as reported by the paper)"],
            r["our measurement (mean ± std over seeds)"], r["effect"], setting, verdict_text)) + " |")
    rules = sorted(set(table["rule"].str.replace(r"; fewer than 2 seeds measured", "", regex=False)))
    lines += ["", "Verdict rule (effect = the claimed difference, per seed, in the unit shown): " + " | ".join(rules),
              "", f"Measured time (all cached results): {table['wall s'].sum() / 60:.1f} min wall, "
              f"{table['cpu s'].sum() / 60:.1f} min CPU of this process."]
    return "\n".join(lines) + "\n"


__all__ = ["run_claims", "all_claims", "claims_table", "claims_markdown", "measure_once", "result_path",
           "CLAIMS_CSV", "CLAIMS_MD", "MARKER", "BACKBONE_NOTE"]
