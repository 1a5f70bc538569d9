"""The claims table: every implemented paper's central claim, measured over seeds, with a stated verdict rule.

* :mod:`~nbseg.claims.base` - :class:`Claim` (a row: claim, the paper's evidence, ``measure(ctx, seed)``),
  :class:`Measurement`, :class:`ClaimContext` (what measurements share), :func:`verdict` (the rule).
* :mod:`~nbseg.claims.runner` - :func:`run_claims`: every method's ``MethodSpec.claims`` over seeds, each result
  cached atomically (resumable), ``claims.csv`` and ``claims.md``.
* :mod:`~nbseg.claims.cli` - ``nbseg claims OUT_DIR [--profile smoke|full] [--seeds N] [--overwrite]``.

A method's claims live in its own folder (``nbseg/methods/<name>/claims.py``) and reach the table only through its
spec, so adding a method's row never touches this package.
"""
from nbseg.claims.base import PROFILES, VERDICTS, Claim, ClaimContext, Measurement, judged, verdict

__all__ = ["Claim", "ClaimContext", "Measurement", "verdict", "judged", "PROFILES", "VERDICTS"]
