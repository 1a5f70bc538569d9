"""Progress bars that show in a terminal, in a live Jupyter notebook and in a notebook executed headless.

Why not ``tqdm.auto`` everywhere: inside a kernel it draws an ipywidgets bar, and a notebook executed by papermill
(``nbseg notebooks run``, CI) has no frontend to update it, so the stored notebook shows "0/10 0%" forever. There
the bar is plain text (its last state is what the executed notebook shows), refreshed at most every few seconds so
the stored output stays small.

``NBSEG_PROGRESS`` chooses: ``auto`` (default: a widget in a live notebook, text elsewhere), ``text`` (what the
notebook runner sets for the kernels it starts), or ``off``.
"""
from __future__ import annotations

import os
import sys

ENV = "NBSEG_PROGRESS"
TEXT_REFRESH_S = 5.0  # seconds between refreshes of a text bar in an executed notebook


def progress_mode() -> str:
    mode = os.environ.get(ENV, "auto").strip().lower()
    return mode if mode in ("auto", "text", "off") else "auto"


def _in_kernel() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except AttributeError:
        return False


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` with the choice above (same arguments)."""
    mode = progress_mode()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "auto":
        from tqdm.auto import tqdm as bar

        return bar(*args, **kwargs)
    from tqdm.std import tqdm as bar

    if _in_kernel():
        kwargs.setdefault("mininterval", TEXT_REFRESH_S)
        kwargs.setdefault("ascii", True)
    return bar(*args, **kwargs)
