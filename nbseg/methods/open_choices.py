"""The choices a paper leaves open, read from the numbered list under "Choices the paper leaves open" in module
docstrings, for the method notebooks (DCN, SAN) to show what the code says.

Standard library only, and the docstrings are read from the source files (``ast``), not by importing them: notebook
generators (``tools/notebooks_<method>.py``) run this file on its own (``runpy``) without importing nbseg, so
notebook and code say the same thing.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path


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


def open_choices(sources: dict[str, Path]) -> dict[str, str]:
    """``{part: markdown numbered list}`` of the open choices, from the docstrings of ``{part: module file}``."""
    return {part: choices_section(ast.get_docstring(ast.parse(Path(path).read_text()), clean=False))
            for part, path in sources.items()}


def open_choices_markdown(sources: dict[str, Path]) -> str:
    """:func:`open_choices` as one markdown text (a heading per part, RST ``code`` turned into markdown)."""
    parts = [f"**{part}**\n\n" + re.sub(r"``([^`]+)``", r"`\1`", re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text))
             for part, text in open_choices(sources).items()]
    return "\n\n".join(parts)


__all__ = ["choices_section", "open_choices", "open_choices_markdown"]
