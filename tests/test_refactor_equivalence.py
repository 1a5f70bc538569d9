"""Behaviour is preserved across the method-contract refactor: the AlignSeg and DCN smoke runs, driven through the
``nbseg`` command line exactly as ``tools/record_smoke_metrics.py`` drove them on the code before the move, give the
metrics recorded then (``tests/data/smoke_metrics_before_refactor.json``, with the revision it ran on)."""
from __future__ import annotations

import json
import math

from tests.recorded import RECORDINGS, load_tool

RECORDED = RECORDINGS / "smoke_metrics_before_refactor.json"


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    return math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-6)


def test_smoke_runs_match_the_metrics_recorded_before_the_refactor(tmp_path):
    recorder = load_tool("record_smoke_metrics")
    recorded = json.loads(RECORDED.read_text())
    # the recording used the settings the script holds now (a changed script must be re-recorded first)
    assert recorded["world"] == recorder.WORLD and recorded["eval_limit"] == recorder.EVAL_LIMIT
    assert recorded["alignseg_overrides"] == recorder.ALIGNSEG_OVERRIDES
    assert recorded["dcn_overrides"] == recorder.DCN_OVERRIDES
    now = recorder.run_smoke(tmp_path)
    for method, before in recorded["metrics"].items():
        assert before, f"nothing was recorded for {method}"
        after = now[method]
        missing = sorted(set(before) - set(after))
        assert not missing, f"{method}: metrics.json no longer holds {missing}"
        differ = {key: (before[key], after[key]) for key in before if not _close(before[key], after[key])}
        assert not differ, f"{method}: metrics differ from those recorded at {recorded['git_revision']}: {differ}"
