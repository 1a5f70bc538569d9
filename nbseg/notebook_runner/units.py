"""Unit folders of a notebook batch: ``<out>/<stem>/`` is replaced only when the new run of ``<stem>`` succeeds.

Why: re-running a notebook into the folder of an earlier run used to overwrite the good executed copy with a
failed one and leave the old ``metrics.json`` and figures beside it, so the folder mixed two runs. Now:

* before a run, the previous unit moves aside to ``<out>/.<stem>.previous`` and the run gets a fresh
  ``<out>/<stem>/`` (the notebook's ``OUT_DIR``, as before). Training run folders inside the previous unit (those
  holding a ``checkpoint.pt``) are copied in, so a notebook that trains resumes as it did;
* on success :data:`MARKER` is written into the unit and the previous one is deleted;
* on failure (or Ctrl-C) the new run moves to ``<out>/<stem>.failed/`` for inspection and the previous unit comes
  back untouched. A batch killed outright leaves ``.<stem>.previous``; the next run of that notebook restores it
  first.

Only units holding :data:`MARKER` count as successful (``metrics.csv`` is built from them).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from nbseg.io import atomic_write_text

MARKER = "run_info.json"
FAILED_SUFFIX = ".failed"


def previous_dir(unit: Path) -> Path:
    return unit.parent / f".{unit.name}.previous"


def failed_dir(unit: Path) -> Path:
    return unit.parent / f"{unit.name}{FAILED_SUFFIX}"


def _replace(src: Path, dst: Path) -> None:
    """Move folder ``src`` to ``dst``, removing what ``dst`` held."""
    if dst.exists():
        shutil.rmtree(dst)
    src.rename(dst)


def begin(unit: Path) -> Path | None:
    """Set the previous unit aside and make a fresh ``unit``; returns where the previous one waits (or None)."""
    unit = Path(unit)
    unit.parent.mkdir(parents=True, exist_ok=True)
    aside = previous_dir(unit)
    if aside.exists():                 # an earlier batch was killed mid-run: its run is not a result
        _replace(aside, unit)
    if not unit.exists():
        unit.mkdir()
        return None
    unit.rename(aside)
    unit.mkdir()
    for checkpoint in sorted(aside.rglob("checkpoint.pt")):   # training runs resume, as they did in place
        run = checkpoint.parent
        if run == aside:
            continue
        target = unit / run.relative_to(aside)
        if not target.exists():
            shutil.copytree(run, target)
    return aside


def succeed(unit: Path, previous: Path | None, info: dict) -> None:
    """Mark ``unit`` successful and drop the previous unit and any earlier failed run of it."""
    atomic_write_text(Path(unit) / MARKER, json.dumps({**info, "status": "ok", "finished": time.time()}, indent=1,
                                                        default=str))
    for leftover in (previous, failed_dir(Path(unit))):
        if leftover is not None and leftover.exists():
            shutil.rmtree(leftover)


def fail(unit: Path, previous: Path | None) -> Path:
    """Move the failed run to ``<stem>.failed`` and put the previous unit back; returns the failed run's folder."""
    unit = Path(unit)
    failed = failed_dir(unit)
    if unit.exists():
        _replace(unit, failed)
    if previous is not None and previous.exists():
        previous.rename(unit)
    return failed


def successful_units(out_root: Path) -> list[Path]:
    """The unit folders of ``out_root`` that a successful run wrote, by name."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        return []
    return sorted(p for p in out_root.iterdir() if p.is_dir() and (p / MARKER).is_file())


__all__ = ["begin", "succeed", "fail", "successful_units", "MARKER", "failed_dir", "previous_dir"]
