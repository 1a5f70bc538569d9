"""Shared by the tests that compare with values recorded before a refactor: the recording scripts under ``tools/``
(run unchanged before and after, so they are loaded from their file, not imported as a package)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = REPO / "tests" / "data"


def load_tool(name: str):
    """The module ``tools/<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
