"""The choices the DCN paper leaves open, and ours, as written in the docstrings of :mod:`nbseg.methods.dcn.model`
(network, loss, training) and :mod:`nbseg.methods.dcn.regions` (region classification), for notebook ``11_dcn``.

Standard library only, and the docstrings are read from the source files (``ast``), not by importing them: the
notebook generator (``tools/notebooks_dcn.py``) runs this file on its own to write the same list into the notebook's
markdown without importing nbseg, so notebook and code say the same thing.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"DCN (nbseg.methods.dcn)": HERE / "model.py",
           "region classification (nbseg.methods.dcn.regions)": HERE / "regions.py"}


def choices_section(doc: str) -> str:
    """The numbered list that follows "Choices the paper leaves open" in a module docstring."""
    start = doc.index("Choices the paper leaves open")
    body = doc[doc.index("\n", start) + 1:].strip("\n")
    items = re.split(r"\n(?=\d+\. )", body)
    kept = []
    for item in items:
        if not re.match(r"\d+\. ", item):
            break
        kept.append(item.split("\n\n")[0])
        if "\n\n" in item:
            break
    return "\n".join(kept)


def open_choices() -> dict[str, str]:
    """``{part: markdown numbered list}`` of the open choices, from the two modules' docstrings."""
    return {part: choices_section(ast.get_docstring(ast.parse(path.read_text()), clean=False))
            for part, path in SOURCES.items()}


def open_choices_markdown() -> str:
    """:func:`open_choices` as one markdown text (a heading per part, RST ``code`` turned into markdown)."""
    parts = [f"**{part}**\n\n" + re.sub(r"``([^`]+)``", r"`\1`", re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text))
             for part, text in open_choices().items()]
    return "\n\n".join(parts)


__all__ = ["open_choices", "open_choices_markdown", "choices_section"]
