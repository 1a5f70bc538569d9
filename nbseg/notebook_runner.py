"""Run the numbered notebooks headless with papermill and collect the metrics they record.

``nbseg notebooks run [NAMES...]`` executes notebooks from ``notebooks/`` (``00_quickstart.ipynb``, ...) the way
CI does: each gets ``SMOKE`` from the profile, ``INTERACTIVE=False`` and its own ``OUT_DIR``
(``<out>/<stem>/``, which also receives the executed copy ``<stem>.ipynb``), plus any ``-p KEY=VALUE``
overrides. Every notebook writes ``metrics.json`` into its ``OUT_DIR``; after the batch the numbers of every
successful unit folder under ``<out>`` (this batch's and earlier ones') are collected into one table,
``<out>/metrics.csv`` (columns notebook, key, value). A unit folder is replaced only when the new run succeeds; a
failed run lands in ``<out>/<stem>.failed/`` (:mod:`nbseg.notebook_units`).

Overrides are checked against the defaults of the notebook's ``parameters``-tagged cell *before* anything runs:
papermill itself only warns about unknown parameters, and about a missing tag, and then the notebook's own
defaults silently win. A failing notebook does not stop the batch; the failures are reported together at the end
with the failing cell and the executed copy to open.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbseg
from nbseg import notebook_units as units
from nbseg.errors import ConfigError, NbsegError
from nbseg.io import atomic_write_text
from nbseg.progress import ENV as PROGRESS_ENV

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # the cell papermill inserts after the parameters cell
KERNEL_NAME = "python3"
NOTEBOOK_NAME = re.compile(r"^\d{2}_.+\.ipynb$")
PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
PROFILES = {"smoke": True, "full": False}  # profile -> the SMOKE parameter
RUNNER_KEYS = ("SMOKE", "INTERACTIVE", "OUT_DIR")  # set by the runner on every run, never by -p
RUNNER_KEYS_HINT = "SMOKE comes from --profile (smoke|full), OUT_DIR from --out, INTERACTIVE is False headless"
REQUIRED_KEYS = ("SMOKE", "INTERACTIVE", "SEED", "OUT_DIR")  # every notebook's parameters cell (conventions)
DEFAULT_TIMEOUT_S = 900
DEFAULT_TIMEOUTS = {"smoke": DEFAULT_TIMEOUT_S, "full": None}  # per cell; a full run may train for hours
METRICS_FILE = "metrics.json"
METRICS_TABLE = "metrics.csv"
METRIC_COLUMNS = ["notebook", "key", "value"]
SUMMARY_MAX_ROWS = 40  # longer metric tables are only written, not printed
# metrics.json older than the run's start (minus file-system clock slack) is left over from an earlier run.
STALE_SLACK_S = 1.0


class NotebookFailure(NbsegError):
    """One or more notebooks of a batch failed; ``failures`` says where, ``metrics`` holds what the others gave."""

    def __init__(self, failures: list[FailedNotebook], total: int, metrics):
        self.failures = failures
        self.metrics = metrics
        lines = [f"{len(failures)} of {total} notebooks failed:"] + [f"  {failure}" for failure in failures]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class FailedNotebook:
    notebook: str         # the notebook's stem
    reason: str           # the failing cell and its error
    executed_copy: Path   # the executed notebook, with outputs up to the failure

    def __str__(self) -> str:
        if self.executed_copy.exists():
            return f"{self.notebook}: {self.reason}\n    inspect {self.executed_copy}"
        return f"{self.notebook}: {self.reason} (no executed copy was written)"


@dataclass(frozen=True)
class _RunPlan:
    path: Path
    parameters: dict[str, Any]
    out_dir: Path
    parameters_cell: int      # index of the parameters-tagged cell in the source notebook
    source_cell_types: tuple  # cell types of the source notebook, to name a failing cell
    has_injected_cell: bool   # a leftover injected cell is replaced, not inserted, by papermill

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def executed_copy(self) -> Path:
        return self.out_dir / self.path.name


# ----------------------------------------------------------------------------------------------------------------
# locations


def repo_root() -> Path:
    """The checkout that holds the ``nbseg`` package (``notebooks/`` and ``artifacts/`` live there)."""
    return Path(nbseg.__file__).resolve().parents[1]


def default_notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def default_out_dir() -> Path:
    return repo_root() / "artifacts" / "notebooks"  # git-ignored


def find_notebooks(names: list[str] | None = None, notebooks_dir: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks (``NN_*.ipynb``) of ``notebooks_dir`` selected by ``names``, in numbered order.

    A name selects by file name (``00_quickstart.ipynb``), stem (``00_quickstart``) or stem prefix (``00``; ``1``
    selects every 1x notebook). No names selects all. An unknown name is an error listing the available ones.
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    if not folder.is_dir():
        raise ConfigError(f"notebooks folder {folder} does not exist; pass --notebooks-dir")
    available = sorted(p for p in folder.iterdir() if NOTEBOOK_NAME.match(p.name) and p.is_file())
    if not names:
        return available
    selected: set[Path] = set()
    for name in names:
        key = Path(name).name  # tolerate a path such as notebooks/00_quickstart.ipynb
        exact = [p for p in available if key in (p.name, p.stem)]
        matches = exact or [p for p in available if p.stem.startswith(key)]
        if not matches:
            listing = ", ".join(p.stem for p in available) or "(none)"
            raise ConfigError(f"no notebook matches {name!r} in {folder}; available: {listing}. "
                              "Name one by number (00), stem (00_quickstart) or file name")
        selected.update(matches)
    return [p for p in available if p in selected]


# ----------------------------------------------------------------------------------------------------------------
# reading and checking notebooks


def _read_notebook(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise
    except Exception as err:  # nbformat raises JSON, validation and version errors of several types
        raise ConfigError(f"{path} cannot be read as a notebook: {err}") from err


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _parameters_cell_index(nb) -> int | None:
    """Index of the first code cell tagged ``parameters`` (the one papermill injects after), or None."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PARAMETERS_TAG in _tags(cell):
            return index
    return None


def _python_source(cell_source: str) -> str:
    """The cell's code with IPython syntax (``%magics``, ``!shell``) turned into plain Python calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return cell_source
    return TransformerManager().transform_cell(cell_source)


def _parse_parameters(nb, path: Path) -> dict[str, Any]:
    index = _parameters_cell_index(nb)
    if index is None:
        raise ConfigError(
            f"{path}: no code cell is tagged '{PARAMETERS_TAG}'; papermill would only warn and the notebook's own "
            "defaults would silently win. Tag the first code cell, the one holding SMOKE, INTERACTIVE, SEED, "
            "OUT_DIR (cell toolbar > Tags, or metadata.tags = [\"parameters\"])")
    try:
        tree = ast.parse(_python_source(nb.cells[index].source))
    except SyntaxError as err:
        raise ConfigError(f"{path}: the parameters cell (cell {index}) is not valid Python: {err.msg} "
                          f"(line {err.lineno})") from err
    defaults: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and PARAMETER_NAME.match(target.id)):
            continue
        try:
            defaults[target.id] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError) as err:
            raise ConfigError(
                f"{path}: parameter {target.id} = {ast.unparse(value)} is not a literal; keep plain values "
                "(numbers, strings, True/False/None, lists, dicts) in the parameters cell, so they can be "
                "checked and overridden, and derive the rest in a later cell") from err
    return defaults


def read_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """The UPPER_CASE defaults of the notebook's ``parameters``-tagged cell, in source order.

    Raises ConfigError when no code cell carries the tag or a default is not a literal.
    """
    path = Path(path)
    return _parse_parameters(_read_notebook(path), path)


def check_notebook(path: str | os.PathLike) -> list[str]:
    """What is wrong with a notebook as committed: an empty list means it is clean.

    Checks for: the ``parameters`` tag on the first code cell (one tagged cell, literal defaults, the required
    SMOKE / INTERACTIVE / SEED / OUT_DIR), stored outputs and execution counts, papermill or execution metadata
    (an executed copy committed by mistake), and stored widget state.
    """
    path = Path(path)
    try:
        nb = _read_notebook(path)
    except ConfigError as err:
        return [str(err)]
    problems = []
    try:
        defaults = _parse_parameters(nb, path)
    except ConfigError as err:
        problems.append(str(err))
    else:
        code_cells = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
        tagged = [i for i in code_cells if PARAMETERS_TAG in _tags(nb.cells[i])]
        if tagged[0] != code_cells[0]:
            problems.append(f"the parameters-tagged cell (cell {tagged[0]}) is not the first code cell; move it "
                            "up so no earlier cell runs before the parameters are set")
        if len(tagged) > 1:
            problems.append(f"cells {tagged} are all tagged '{PARAMETERS_TAG}'; papermill only injects after the "
                            "first: keep one")
        missing = [key for key in REQUIRED_KEYS if key not in defaults]
        if missing:
            problems.append(f"the parameters cell does not define {', '.join(missing)}; every notebook declares "
                            f"{', '.join(REQUIRED_KEYS)}")
    stripped_hint = "strip it before committing (nbstripout, or Edit > Clear Outputs of All Cells)"
    with_outputs = [i for i, cell in enumerate(nb.cells) if cell.get("outputs")]
    if with_outputs:
        problems.append(f"cells {with_outputs} carry stored outputs; {stripped_hint}")
    with_counts = [i for i, cell in enumerate(nb.cells) if cell.get("execution_count") is not None]
    if with_counts:
        problems.append(f"cells {with_counts} carry execution counts; {stripped_hint}")
    run_metadata = ["metadata.papermill"] if "papermill" in nb.metadata else []
    run_metadata += [f"cell {i}: {key}" for i, cell in enumerate(nb.cells)
                     for key in ("papermill", "execution") if key in cell.get("metadata", {})]
    run_metadata += [f"cell {i}: tag {INJECTED_TAG}" for i, cell in enumerate(nb.cells) if INJECTED_TAG in _tags(cell)]
    if run_metadata:
        problems.append(f"papermill / execution metadata present ({'; '.join(run_metadata)}): this looks like an "
                        "executed copy; commit the source notebook, or strip it with nbstripout configured to "
                        "drop metadata.papermill")
    if "widgets" in nb.metadata:
        problems.append(f"metadata.widgets holds stored widget state; {stripped_hint}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# parameters


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` may replace ``default``: same type (bool is not int), an int for a float.

    A None default declares no type (an optional path or limit), so any value may replace it.
    """
    if default is None:
        return True
    if type(default) is float and type(value) is int:
        return True
    return type(value) is type(default)


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line: VALUE as a Python literal (``5``, ``0.1``, ``True``, ``None``,
    ``[1, 2]``, ``'"5"'``), else as the raw string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r} (e.g. -p N_IMAGES=8)")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = raw
    return key, value


def _override_problems(stem: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    problems = []
    valid = ", ".join(key for key in defaults if key not in RUNNER_KEYS) or "(none)"
    for key, value in overrides.items():
        if key not in defaults:
            problems.append(f"{stem}: unknown parameter {key}; valid keys: {valid}")
        elif not _fits(value, defaults[key]):
            default = defaults[key]
            if key in RUNNER_KEYS:
                hint = f"and {key} is not for -p: {RUNNER_KEYS_HINT}"
            elif isinstance(default, str):
                hint = f"quote text to pass it as a string: -p {key}='\"{value}\"'"
            else:
                hint = f"pass e.g. -p {key}={default!r}"
            problems.append(f"{stem}: parameter {key} expects {_type_name(default)} (default {default!r}), "
                            f"got {value!r} ({_type_name(value)}); {hint}")
        elif key in RUNNER_KEYS:
            problems.append(f"{key} is set by the runner, not by -p: {RUNNER_KEYS_HINT}")
    return problems


def _plan_runs(paths: list[Path], profile: str, overrides: dict[str, Any], out_root: Path) -> list[_RunPlan]:
    """Check every notebook and override before anything runs; one ConfigError lists all problems."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    stems = [path.stem for path in paths]
    duplicated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicated:
        raise ConfigError(f"notebooks {duplicated} share a name, so they would share an output folder; run them "
                          "in separate batches with different --out")
    problems, plans = [], []
    for path in paths:
        try:
            nb = _read_notebook(path)
            defaults = _parse_parameters(nb, path)
        except ConfigError as err:
            problems.append(str(err))
            continue
        missing = [key for key in RUNNER_KEYS if key not in defaults]
        if missing:
            problems.append(f"{path.stem}: the parameters cell does not define {', '.join(missing)}, which the "
                            "runner sets on every run; declare them with their interactive defaults")
        problems += _override_problems(path.stem, defaults, overrides)
        out_dir = out_root / path.stem
        plans.append(_RunPlan(
            path=path,
            parameters={**overrides, "SMOKE": PROFILES[profile], "INTERACTIVE": False, "OUT_DIR": str(out_dir)},
            out_dir=out_dir,
            parameters_cell=_parameters_cell_index(nb),
            source_cell_types=tuple(cell.cell_type for cell in nb.cells),
            has_injected_cell=any(INJECTED_TAG in _tags(cell) for cell in nb.cells),
        ))
    if problems:
        raise ConfigError("nothing was run:\n  " + "\n  ".join(dict.fromkeys(problems)))  # each once
    return plans


# ----------------------------------------------------------------------------------------------------------------
# kernel


def _runs_current_interpreter(executable: str) -> bool:
    """Whether a kernel spec's ``argv[0]`` starts this environment's Python."""
    # jupyter_client launches sys.executable for a bare python / python3 / python3.X (jupyter_client.manager).
    if executable in {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}:
        return True
    # Same bin folder = same environment; resolving symlinks would wrongly equate a venv with its base Python.
    return os.path.dirname(os.path.abspath(executable)) == os.path.dirname(os.path.abspath(sys.executable))


def ensure_python3_kernel() -> Path:
    """Make sure the ``python3`` Jupyter kernel runs this interpreter; install one into ``sys.prefix`` if not.

    On a fresh machine the only ``python3`` kernel may be missing or belong to another Python, whose packages
    lack nbseg. The kernel is installed into the environment (never the user's home). Returns the spec's folder.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def current_spec():
        try:
            return KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        except NoSuchKernel:
            return None

    spec = current_spec()
    if spec is not None and spec.argv and _runs_current_interpreter(spec.argv[0]):
        return Path(spec.resource_dir)
    from ipykernel.kernelspec import install

    install(prefix=sys.prefix, kernel_name=KERNEL_NAME)
    spec = current_spec()
    if spec is None or not spec.argv or not _runs_current_interpreter(spec.argv[0]):
        where = "none found" if spec is None else f"{spec.resource_dir} runs {spec.argv[:1]}"
        raise ConfigError(f"installed a '{KERNEL_NAME}' Jupyter kernel into {sys.prefix}, but another one takes "
                          f"precedence ({where}) instead of {sys.executable}; remove it (jupyter kernelspec "
                          "remove python3) or set JUPYTER_PREFER_ENV_PATH=1")
    print(f"installed the '{KERNEL_NAME}' Jupyter kernel for {sys.executable} into {spec.resource_dir}")
    return Path(spec.resource_dir)


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
    import pandas as pd

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
    import pandas as pd
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
