"""The choices the DCN paper leaves open, and ours, as written in the docstrings of :mod:`nbseg.methods.dcn.model`
(network, loss, training) and :mod:`nbseg.methods.dcn.regions` (region classification), for notebook ``11_dcn``.

Standard library only: the notebook generator (``tools/notebooks_dcn.py``) runs this file on its own, and it runs
the shared reader :mod:`nbseg.methods.open_choices` the same way (no nbseg import), so notebook and code say the
same thing.
"""
from __future__ import annotations

import runpy
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"DCN (nbseg.methods.dcn)": HERE / "model.py",
           "region classification (nbseg.methods.dcn.regions)": HERE / "regions.py"}
_READER = runpy.run_path(str(HERE.parent / "open_choices.py"))
choices_section = _READER["choices_section"]


def open_choices() -> dict[str, str]:
    """``{part: markdown numbered list}`` of the open choices, from the two modules' docstrings."""
    return _READER["open_choices"](SOURCES)


def open_choices_markdown() -> str:
    """:func:`open_choices` as one markdown text."""
    return _READER["open_choices_markdown"](SOURCES)


__all__ = ["open_choices", "open_choices_markdown", "choices_section"]
