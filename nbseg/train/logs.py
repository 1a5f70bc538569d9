"""The run folder's records: ``config.yaml`` / ``provenance.json`` (:func:`start_run_folder`), and the log:
``log.csv`` (one row per logged step, rewritten atomically with each checkpoint) and its figure.

The log is written together with the checkpoint and, on resume, cut back to the steps the checkpoint covers, so a
resumed log has neither duplicated nor orphaned rows.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nbseg.config import dump_yaml
from nbseg.io import atomic_write_json, atomic_write_text
from nbseg.runs import provenance
from nbseg.viz import curve_figure


def start_run_folder(run_dir: str | Path, cfg: Any, provenance_extra: Callable[[], dict]) -> None:
    """Create ``run_dir``, write the resolved config (every start) and, on the first start only, ``provenance.json``
    (seed, git revision, environment and ``provenance_extra()``, e.g. weights sha256; called only then, since
    hashing a weights file takes time). Rank 0 calls this."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    if not (run_dir / "provenance.json").exists():
        atomic_write_json(run_dir / "provenance.json", provenance(cfg.seed, **provenance_extra()))


def read_log(path: str | Path, up_to_step: int | None = None) -> list[dict]:
    """The rows of a CSV log (values as strings); with ``up_to_step`` only those with ``step <= up_to_step``."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if up_to_step is None else [r for r in rows if int(r["step"]) <= up_to_step]


def write_log(path: str | Path, rows: Sequence[Mapping], fields: Sequence[str]) -> None:
    """Write ``rows`` under the header ``fields`` atomically (a missing value is left empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def curves_figure(rows: Sequence[Mapping], series: Mapping[str, str], title: str, ylabel: str = "loss"):
    """One line per ``{label: column}`` of the log rows over their ``step`` column (empty cells are skipped)."""
    steps = np.array([float(r["step"]) for r in rows])
    ys = {label: np.array([float(r[col]) if r.get(col) not in (None, "") else np.nan for r in rows])
          for label, col in series.items()}
    return curve_figure(steps, ys, title=title, xlabel="step", ylabel=ylabel)
