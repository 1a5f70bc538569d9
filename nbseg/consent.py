"""What the user explicitly allowed for this process (kept free of heavy imports: the CLI reads it before any
command module is loaded).

Why weights are loaded with torch's safe loader by default: a ``.pth`` file is a pickle, and unpickling runs
whatever code the file names. The unsafe loader runs only after ``nbseg --allow-unsafe-pickle`` (or
``allow_unsafe_pickle()`` in Python).
"""
from __future__ import annotations

UNSAFE_PICKLE_HELP = ("also load weights files that the safe loader refuses, by unpickling them in full. DANGEROUS: "
                      "unpickling runs any code the file contains, so a downloaded or shared file can take over this "
                      "account; use it only for files you made yourself or fully trust")
_UNSAFE_PICKLE = {"allowed": False}


def allow_unsafe_pickle(allowed: bool = True) -> None:
    """Process-wide consent to unpickle weights files in full (see :data:`UNSAFE_PICKLE_HELP`)."""
    _UNSAFE_PICKLE["allowed"] = bool(allowed)


def unsafe_pickle_allowed() -> bool:
    return _UNSAFE_PICKLE["allowed"]
