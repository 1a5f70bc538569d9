"""Executing a batch of notebooks with papermill (imported when a batch runs: it comes with the ``notebooks`` extra),
each in its own unit folder, and collecting the ``metrics.json`` they write into one table."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from nbseg.errors import ConfigError
from nbseg.io import atomic_write_text
from nbseg.notebook_runner import units
from nbseg.notebook_runner.kernel import ensure_python3_kernel
from nbseg.notebook_runner.notebooks import (DEFAULT_TIMEOUT_S, KERNEL_NAME, METRIC_COLUMNS, METRICS_FILE,
                                             METRICS_TABLE, STALE_SLACK_S, SUMMARY_MAX_ROWS, FailedNotebook,
                                             NotebookFailure, _RunPlan, _plan_runs, default_out_dir)
from nbseg.progress import ENV as PROGRESS_ENV

# ----------------------------------------------------------------------------------------------------------------
# running


def _describe_cell_error(err, plan: _RunPlan) -> str:
    """Name the failing cell in source-notebook terms; papermill counts the cell it injected."""
    executed_index = getattr(err, "cell_index", None)
    exec_count = getattr(err, "exec_count", None)
    error = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', '')}".rstrip(": ")
    if executed_index is None:
        return f"raised {error}"
    injected_index = plan.parameters_cell + 1
    if not plan.has_injected_cell and executed_index == injected_index:
        return f"the cell papermill injected with the parameters raised {error}"
    shift = 1 if not plan.has_injected_cell and executed_index > injected_index else 0
    index = executed_index - shift
    code_number = sum(kind == "code" for kind in plan.source_cell_types[: index + 1])
    return (f"code cell {code_number} (cell index {index} of the source notebook; In [{exec_count}] in the "
            f"executed copy) raised {error}")


def _flatten(metrics: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts to dotted keys; lists become JSON text so that each metric fits one table cell."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, json.dumps(value) if isinstance(value, list) else value))
    return rows


def _collect_metrics(plan: _RunPlan, started: float) -> list[tuple[str, Any]]:
    """The flattened metrics.json the run wrote; raises ValueError when it is unreadable."""
    path = plan.out_dir / METRICS_FILE
    if not path.is_file():
        return []
    if path.stat().st_mtime < started - STALE_SLACK_S:
        print(f"    note: {path} is from an earlier run (this run wrote none); ignored")
        return []
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} holds a {type(metrics).__name__}; write a JSON object (name -> value)")
    return _flatten(metrics)


def _unit_rows(out_root: Path) -> list[tuple[str, str, Any]]:
    """(notebook, key, value) of every successful unit folder under ``out_root`` (what ``metrics.csv`` holds)."""
    rows = []
    for unit in units.successful_units(out_root):
        try:
            metrics = json.loads((unit / METRICS_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            continue                        # a notebook that records no metrics
        if isinstance(metrics, dict):
            rows += [(unit.name, key, value) for key, value in _flatten(metrics)]
    return rows


def _print_summary(statuses: list[tuple[str, str, float, int]], metrics, table: Path) -> None:
    print()
    print(pd.DataFrame(statuses, columns=["notebook", "status", "seconds", "metrics"])
          .to_string(index=False, float_format=lambda s: f"{s:.1f}"))
    if len(metrics):
        print()
        # Long values (lists, nested records) belong in the CSV; the terminal shows a readable excerpt.
        shown = metrics.assign(value=metrics["value"].map(lambda v: v if len(str(v)) <= 60 else str(v)[:57] + "..."))
        print(shown.to_string(index=False) if len(shown) <= SUMMARY_MAX_ROWS
              else f"({len(shown)} metrics; see the table)")
    print(f"metrics table: {table}")


def run_notebooks(paths: list[str | os.PathLike], profile: str = "smoke", overrides: dict[str, Any] | None = None,
                  out_dir: str | os.PathLike | None = None, timeout: float | None = DEFAULT_TIMEOUT_S):
    """Execute notebooks with papermill and return their collected metrics (columns notebook, key, value).

    Each notebook runs in its own folder with ``SMOKE`` from ``profile``, ``INTERACTIVE=False``,
    ``OUT_DIR=<out_dir>/<stem>`` and ``overrides``; ``timeout`` is the per-cell limit in seconds (None or 0: no
    limit). The executed copy lands in ``<out_dir>/<stem>/<stem>.ipynb`` (``<out_dir>/<stem>.failed/`` for a
    failed run, the previous successful unit staying in place) and the metrics table, rebuilt from every successful
    unit folder present, in ``<out_dir>/metrics.csv``; the returned table holds this batch's rows. Bad parameters
    raise ConfigError before anything runs; a failing notebook does not stop the others, and NotebookFailure lists
    the failures after all have run.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebooks = [Path(p).resolve() for p in paths]
    if not notebooks:
        raise ConfigError("no notebooks to run; name them or pass a folder that holds NN_*.ipynb notebooks")
    out_root = Path(out_dir if out_dir is not None else default_out_dir()).resolve()
    plans = _plan_runs(notebooks, profile, dict(overrides or {}), out_root)
    ensure_python3_kernel()

    rows: list[tuple[str, str, Any]] = []
    failures: list[FailedNotebook] = []
    statuses: list[tuple[str, str, float, int]] = []
    table = out_root / METRICS_TABLE
    # The kernels papermill starts inherit this: with no frontend to draw widget bars, progress is text.
    progress_before = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "text"
    try:
        for number, plan in enumerate(plans, start=1):
            print(f"[{number}/{len(plans)}] {plan.stem} ({profile}) ...", end=" ", flush=True)
            previous = units.begin(plan.out_dir)   # the previous unit waits aside until this run succeeds
            started = time.time()
            reason = None
            found: list[tuple[str, Any]] = []
            try:
                papermill.execute_notebook(
                    str(plan.path), str(plan.executed_copy), parameters=plan.parameters, kernel_name=KERNEL_NAME,
                    language="python", cwd=str(plan.path.parent), execution_timeout=timeout or None,
                    progress_bar=False)
                found = _collect_metrics(plan, started)
            except PapermillExecutionError as err:
                reason = _describe_cell_error(err, plan)
            except Exception as err:  # timeouts, a dead kernel, unreadable metrics: report it, run the rest
                reason = f"{type(err).__name__}: {err}"
            except BaseException:     # Ctrl-C: the previous unit comes back before the batch stops
                units.fail(plan.out_dir, previous)
                raise
            elapsed = time.time() - started
            if reason is None:
                units.succeed(plan.out_dir, previous, {"notebook": plan.stem, "profile": profile,
                                                       "parameters": plan.parameters, "seconds": round(elapsed, 1)})
                rows += [(plan.stem, key, value) for key, value in found]
                print(f"ok in {elapsed:.1f} s, {len(found)} metrics", flush=True)
            else:
                failed = units.fail(plan.out_dir, previous)
                failures.append(FailedNotebook(plan.stem, reason, failed / plan.path.name))
                print(f"FAILED after {elapsed:.1f} s: {reason}", flush=True)
            statuses.append((plan.stem, "ok" if reason is None else "FAILED", elapsed, len(found)))
    finally:
        if progress_before is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = progress_before
        # Also on Ctrl-C: every successful unit present keeps its rows in the table; a failed run adds none.
        metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        atomic_write_text(table, pd.DataFrame(_unit_rows(out_root), columns=METRIC_COLUMNS).to_csv(index=False))
    _print_summary(statuses, metrics, table)
    if failures:
        raise NotebookFailure(failures, len(plans), metrics)
    return metrics
