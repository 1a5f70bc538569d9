"""``nbseg reproduce OUT_DIR``: every numbered notebook, every method's ablation batch and the claims table as one
resumable plan, and a static report, ``OUT_DIR/index.html``.

A planner and executor over the existing commands, not a second implementation of them: :mod:`.plan` (units, their
checked parameters, keys and presets), :mod:`.run` (each unit in its own process and work folder, ``--jobs``,
failures and dependencies), :mod:`.unit` (the process of one unit), :mod:`.report` (``metrics.csv``, ``index.html``).
A second run with nothing changed does nothing; a killed run resumes; a failing unit is recorded with its failing
cell in ``OUT_DIR/failures.json`` while the others run, and the exit status is 1.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from nbseg.io import atomic_write_json
from nbseg.notebook_runner.notebooks import DEFAULT_TIMEOUTS, parse_override
from nbseg.reproduce.plan import PROFILES, Plan, build_plan, presets
from nbseg.reproduce.report import INDEX, write_report
from nbseg.reproduce.run import MARKER, Summary, prepare_out, run_plan

PACKAGES = ("nbseg", "torch", "torchvision", "timm", "numpy", "pandas", "scipy", "papermill", "nbconvert")


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def reproduce(out_dir: str | Path, plan: Plan, *, jobs: int = 1, gpus: int = 0, timeout: float | None = None,
              echo=print, report_plan: Plan | None = None) -> Summary:
    """Run ``plan`` into ``out_dir`` and write the report; returns the summary (``summary.failed`` lists what did
    not finish). ``report_plan`` (default ``plan``) names the units the report shows: the whole plan when ``plan``
    is an ``--only`` selection, so units finished by earlier runs stay in the report."""
    from nbseg.runs import environment_info

    out = Path(out_dir).resolve()
    prepare_out(out)
    record = {"started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "profile": plan.profile,
              "preset": plan.preset, "revision": plan.revision, "jobs": jobs, "gpus": gpus,
              "environment": environment_info(), "packages": package_versions(), "status": "running"}
    atomic_write_json(out / MARKER, record)
    t0 = time.perf_counter()
    summary = run_plan(plan, out, jobs=jobs, gpus=gpus, timeout=timeout, echo=echo)
    atomic_write_json(out / MARKER, {**record, "status": "done", "wall_s": round(time.perf_counter() - t0, 1),
                                     "outcomes": [asdict(o) for o in summary.outcomes]})
    write_report(out, report_plan or plan, summary)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# command line


def _cli(args) -> int:
    if args.list_presets:
        for name, preset in sorted(presets().items()):
            print(f"{name}: " + ", ".join(f"{k}={v!r}" for k, v in preset["parameters"].items()))
        return 0
    if args.out_dir is None:
        print("nbseg reproduce: error: OUT_DIR is required", file=sys.stderr)
        return 2
    plan = build_plan(args.profile, args.only, dict(args.parameters), args.preset, args.notebooks_dir)
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUTS[args.profile]
    whole = build_plan(args.profile, None, dict(args.parameters), args.preset, args.notebooks_dir) if args.only \
        else plan
    summary = reproduce(args.out_dir, plan, jobs=args.jobs, gpus=args.gpus, timeout=timeout, report_plan=whole)
    print()
    print(summary.text())
    print(f"report: {Path(args.out_dir) / INDEX}")
    for outcome in summary.failed:
        print(f"FAILED {outcome.unit}: {outcome.reason}" + (f"\n    inspect {outcome.executed_copy}"
                                                             if outcome.executed_copy else ""), file=sys.stderr)
    return 1 if summary.failed else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="run every notebook, ablation batch and the claims table as one resumable plan; "
                          "write OUT_DIR/index.html",
        description="Run the numbered notebooks, every registered method's ablation batch and the claims table as "
                    "one plan into OUT_DIR, then write OUT_DIR/metrics.csv and the static report OUT_DIR/index.html. "
                    "Each unit is keyed by its name, parameters, the code revision, the backbone weights' sha256 "
                    "and the dataset; a unit whose key and outputs are present is skipped (a second run does "
                    "nothing; a killed run resumes). A failing unit is recorded in OUT_DIR/failures.json with its "
                    "failing cell, units depending on it are skipped, the rest run; the exit status is then 1.")
    p.add_argument("out_dir", nargs="?", help="the reproduction folder (new, empty, or an earlier reproduction)")
    p.add_argument("--profile", choices=PROFILES, default="smoke",
                   help="smoke: tiny runs (minutes); full: the real experiments (hours on a CPU) (default: smoke)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="only these units: a notebook (01_attention_thresholds, or a prefix such as 0), "
                        "ablate-METHOD (ablate: every batch), claims")
    p.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], type=parse_override,
                   metavar="KEY=VALUE",
                   help="a parameter for every unit that takes it (a notebook's parameters cell; a method config "
                        "key, upper-cased; BACKBONE / WEIGHTS / DATA_ROOT for the claims); UNIT:KEY=VALUE for one "
                        "unit only; overrides the preset (repeatable)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="a paper setting (alignseg-voc, transfgu-cocostuff27, dcn-voc, pgseg-voc, san-potsdam, ...: "
                        "--list-presets) filling CONFIG, BACKBONE, WEIGHTS, DATASET; pass -p DATA_ROOT=PATH")
    p.add_argument("--list-presets", action="store_true", help="list the presets and what they set, then exit")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N independent units at once, each with max(1, cores // N) threads (default 1)")
    p.add_argument("--gpus", type=int, default=0, metavar="N",
                   help="run training units (the ablation batches) under torchrun --nproc_per_node N")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="time limit per notebook cell (default: 900 with smoke, none with full)")
    p.add_argument("--notebooks-dir", type=Path, default=None, metavar="DIR",
                   help="folder holding the NN_*.ipynb notebooks (default: notebooks/ of the checkout)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.set_defaults(func=_cli)


__all__ = ["reproduce", "build_plan", "package_versions", "register_cli"]
