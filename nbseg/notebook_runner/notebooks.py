"""Finding the numbered notebooks, reading and checking them, and planning a batch: each run's parameters checked
against the defaults of the notebook's ``parameters``-tagged cell before anything runs (papermill itself only warns
about unknown parameters and a missing tag, and then the notebook's own defaults silently win).

nbformat and IPython are imported where a notebook is read: they come with the ``notebooks`` extra."""
from __future__ import annotations

import argparse
import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbseg
from nbseg.errors import ConfigError, NbsegError

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
