"""The choices the SAN paper leaves open, and ours, as written in the docstring of :mod:`nbseg.methods.san.model`,
for notebook ``14_san``. Standard library only (the generator ``tools/notebooks_san.py`` runs this file on its own,
as it runs the shared reader :mod:`nbseg.methods.open_choices`)."""
from __future__ import annotations

import runpy
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"SAN (nbseg.methods.san)": HERE / "model.py"}
_READER = runpy.run_path(str(HERE.parent / "open_choices.py"))


def open_choices() -> dict[str, str]:
    return _READER["open_choices"](SOURCES)


def open_choices_markdown() -> str:
    return _READER["open_choices_markdown"](SOURCES)


__all__ = ["open_choices", "open_choices_markdown"]
