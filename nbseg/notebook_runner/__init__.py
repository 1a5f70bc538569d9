"""Run the numbered notebooks headless with papermill and collect the metrics they record.

``nbseg notebooks run [NAMES...]`` executes notebooks from ``notebooks/`` (``00_quickstart.ipynb``, ...) the way
CI does: each gets ``SMOKE`` from the profile, ``INTERACTIVE=False`` and its own ``OUT_DIR``
(``<out>/<stem>/``, which also receives the executed copy ``<stem>.ipynb``), plus any ``-p KEY=VALUE``
overrides. Every notebook writes ``metrics.json`` into its ``OUT_DIR``; after the batch the numbers of every
successful unit folder under ``<out>`` (this batch's and earlier ones') are collected into one table,
``<out>/metrics.csv`` (columns notebook, key, value). A unit folder is replaced only when the new run succeeds; a
failed run lands in ``<out>/<stem>.failed/`` (:mod:`nbseg.notebook_runner.units`).

Overrides are checked against the defaults of the notebook's ``parameters``-tagged cell *before* anything runs:
papermill itself only warns about unknown parameters, and about a missing tag, and then the notebook's own
defaults silently win. A failing notebook does not stop the batch; the failures are reported together at the end
with the failing cell and the executed copy to open.

The pieces: :mod:`.notebooks` (find, read, check, plan), :mod:`.kernel` (the Jupyter kernel), :mod:`.run`
(execute, collect metrics), :mod:`.units` (unit folders replaced only on success); ``nbseg notebooks`` is here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbseg.errors import ConfigError
from nbseg.notebook_runner.kernel import ensure_python3_kernel
from nbseg.notebook_runner.notebooks import (DEFAULT_TIMEOUT_S, DEFAULT_TIMEOUTS, METRICS_FILE, METRICS_TABLE,
                                             PARAMETERS_TAG, PROFILES, REQUIRED_KEYS, RUNNER_KEYS, FailedNotebook,
                                             NotebookFailure, check_notebook, default_notebooks_dir,
                                             default_out_dir, find_notebooks, parse_override, read_parameters,
                                             repo_root)
from nbseg.notebook_runner.run import run_notebooks

__all__ = ["DEFAULT_TIMEOUT_S", "DEFAULT_TIMEOUTS", "METRICS_FILE", "METRICS_TABLE", "PARAMETERS_TAG", "PROFILES",
           "REQUIRED_KEYS", "RUNNER_KEYS", "FailedNotebook", "NotebookFailure", "check_notebook",
           "default_notebooks_dir", "default_out_dir", "ensure_python3_kernel", "find_notebooks", "parse_override",
           "read_parameters", "repo_root", "run_notebooks", "register_cli"]


# ----------------------------------------------------------------------------------------------------------------
# command line


def _cmd_run(args: argparse.Namespace) -> int:
    paths = find_notebooks(args.names or None, args.notebooks_dir)
    if not paths:
        folder = args.notebooks_dir or default_notebooks_dir()
        raise ConfigError(f"no numbered notebooks (NN_*.ipynb) in {folder}")
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUTS[args.profile]
    try:
        run_notebooks(paths, args.profile, dict(args.parameters), args.out, timeout)
    except NotebookFailure as err:
        print(f"nbseg notebooks run: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    paths = find_notebooks(None, args.notebooks_dir)
    if not paths:
        print(f"no numbered notebooks (NN_*.ipynb) in {args.notebooks_dir or default_notebooks_dir()}")
    for path in paths:
        problems = check_notebook(path)
        try:
            defaults = ", ".join(f"{key}={value!r}" for key, value in read_parameters(path).items())
        except ConfigError:
            defaults = "(no usable parameters cell)"
        print(f"{path.stem}: {defaults}")
        for problem in problems:
            print(f"    problem: {problem}")
    return 0


def register_cli(subparsers) -> None:
    """``nbseg notebooks run`` and ``nbseg notebooks list``."""
    parser = subparsers.add_parser(
        "notebooks", help="run the numbered notebooks headless and collect their metrics",
        description="Run the numbered notebooks headless with papermill (as CI does) and collect their metrics.")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)  # `nbseg notebooks` without an action
    actions = parser.add_subparsers(dest="notebooks_action", metavar="ACTION")

    folder_help = f"folder holding the NN_*.ipynb notebooks (default: {default_notebooks_dir()})"
    run = actions.add_parser(
        "run", help="execute notebooks with papermill",
        description="Execute notebooks with papermill. Each gets SMOKE from --profile, INTERACTIVE=False and "
                    "OUT_DIR=<out>/<stem>, which also receives the executed copy; the metrics.json files are "
                    "collected into <out>/metrics.csv. Exits with 1 when a notebook fails (the others still run).")
    run.add_argument("names", nargs="*", metavar="NAME",
                     help="notebooks by number (00), stem (00_quickstart) or file name; a prefix such as 1 "
                          "selects all 1x notebooks (default: all, in numbered order)")
    run.add_argument("--profile", choices=list(PROFILES), default="smoke",
                     help="smoke sets SMOKE=True: tiny data, minutes, what CI runs; full sets SMOKE=False: the "
                          "real experiment (default: smoke)")
    run.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], type=parse_override,
                     metavar="KEY=VALUE",
                     help="override a parameter of the notebooks' parameters cell; VALUE is read as a Python "
                          "literal (8, 0.1, True, None, [1, 2]) or else as text; the key and the type must match "
                          "the notebook's default (repeatable)")
    run.add_argument("--out", type=Path, default=None,
                     help=f"output folder: <out>/<stem>/ per notebook, <out>/{METRICS_TABLE} (default: "
                          "artifacts/notebooks in the repository, git-ignored)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help=f"time limit per cell (default: {DEFAULT_TIMEOUT_S} with --profile smoke, none with "
                          "full; 0 means none)")
    run.add_argument("--notebooks-dir", type=Path, default=None, metavar="DIR", help=folder_help)
    run.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    run.set_defaults(func=_cmd_run)

    listing = actions.add_parser("list", help="list the notebooks, their parameters and any problems",
                                 description="List the numbered notebooks with their parameter defaults and what "
                                             "check_notebook finds wrong with them (outputs, missing tag...).")
    listing.add_argument("--notebooks-dir", type=Path, default=None, metavar="DIR", help=folder_help)
    listing.set_defaults(func=_cmd_list)
