"""Record the metrics of the AlignSeg and DCN smoke runs, through the ``nbseg`` command line only.

Why only the command line: this script must run unchanged on the code before and after a refactor of the package's
layout (and after the world generator or the shipped weights change), so it imports nothing from ``nbseg``. It

1. writes a tiny world with ``nbseg world DIR --size S --train N --val M``,
2. trains AlignSeg and DCN on it for a few steps with ``nbseg train {alignseg,dcn} RUN --config world ...`` (the
   runs score themselves on the val split and write ``RUN/metrics.json``),
3. keeps the numeric entries of each ``metrics.json`` (times and paths dropped) and writes them, with the git
   revision they ran on, to ``tests/data/smoke_metrics_before_refactor.json`` (or ``--out``).

``tests/test_refactor_equivalence.py`` reruns :func:`run_smoke` and compares with the recorded file.

    python tools/record_smoke_metrics.py                      # record (a few minutes on 2 CPU cores)
    python tools/record_smoke_metrics.py --out /tmp/now.json  # record elsewhere, e.g. to compare by hand
    OTHER/.venv/bin/python tools/record_smoke_metrics.py      # record another checkout's code (its nbseg command)

The recorded ``git_revision`` is that of the checkout whose ``nbseg`` ran.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "smoke_metrics_before_refactor.json"

WORLD = {"size": 96, "train": 32, "val": 12}
# Tiny runs: a few optimiser steps each, scored on the first EVAL_LIMIT val images. DCN's seeds / k-NN use the
# command's defaults; its features are cached under the run folder so nothing outside the temporary folder is used.
EVAL_LIMIT = 12
ALIGNSEG_OVERRIDES = ["max_train_images=16", "batch_size=8", "epochs=2", "n_prototypes=4"]
DCN_OVERRIDES = ["cache_limit=16", "batch_size=8", "max_steps=4", "epochs=2", "n_stages=2", "log_every=1",
                 "checkpoint_every=2"]
# metrics.json entries that are not results of the computation (wall-clock times, where the run was written).
SKIPPED_KEYS = ("train_seconds", "run_dir", "checkpoint")


def nbseg_command() -> list[str]:
    """``nbseg`` of the interpreter running this script (the worktree's virtual environment)."""
    exe = Path(sys.executable).with_name("nbseg")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "nbseg"]


def run_cli(*args: str, env: dict) -> None:
    cmd = nbseg_command() + list(args)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")


def numeric_entries(metrics: dict) -> dict:
    """The numbers of a metrics.json: floats, ints and lists of numbers (bools and strings dropped; NaN kept as
    None). Keys of :data:`SKIPPED_KEYS` are dropped."""
    out = {}
    for key, value in sorted(metrics.items()):
        if key in SKIPPED_KEYS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = None if isinstance(value, float) and math.isnan(value) else value
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            out[key] = value
    return out


def run_smoke(work: Path) -> dict:
    """Write the tiny world under ``work``, train and score both methods there; return
    ``{"alignseg": {...}, "dcn": {...}}`` (numeric metrics)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    world = work / "world"
    run_cli("world", str(world), "--size", str(WORLD["size"]), "--train", str(WORLD["train"]),
            "--val", str(WORLD["val"]), env=env)
    results = {}
    run = work / "alignseg"
    run_cli("train", "alignseg", str(run), f"data_root={world}", *ALIGNSEG_OVERRIDES, "--config", "world",
            "--eval-limit", str(EVAL_LIMIT), "--no-progress", env=env)
    results["alignseg"] = numeric_entries(json.loads((run / "metrics.json").read_text()))
    run = work / "dcn"
    run_cli("train", "dcn", str(run), f"data_root={world}", f"cache_root={work / 'cache'}", *DCN_OVERRIDES,
            "--config", "world", "--eval-limit", str(EVAL_LIMIT), "--no-progress", env=env)
    results["dcn"] = numeric_entries(json.loads((run / "metrics.json").read_text()))
    return results


def code_checkout() -> Path:
    """The checkout whose ``nbseg`` the command runs (this interpreter's install; not necessarily this script's)."""
    found = subprocess.run([sys.executable, "-c", "import nbseg; print(nbseg.__file__)"], capture_output=True,
                           text=True)
    return Path(found.stdout.strip()).resolve().parents[1] if found.returncode == 0 else REPO


def git_revision(checkout: Path = REPO) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON to write (default {DEFAULT_OUT})")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it (default: a "
                                                                 "temporary folder, removed)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="nbseg_smoke_"))
    try:
        metrics = run_smoke(work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    record = {"git_revision": git_revision(code_checkout()), "world": WORLD, "eval_limit": EVAL_LIMIT,
              "alignseg_overrides": ALIGNSEG_OVERRIDES, "dcn_overrides": DCN_OVERRIDES, "metrics": metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({sum(len(m) for m in metrics.values())} numbers, revision {record['git_revision']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
