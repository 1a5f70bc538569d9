"""Behaviour is preserved across the split of ``pretrain()`` into build / step / loop and the move of the optional
objectives out of DINO's path: tiny runs of DINO and of each objective give the per-step losses and final teacher /
center fingerprints recorded before the split (``tests/data/pretrain_losses_before_split.json``, by
``tools/record_pretrain_losses.py`` at the revision it names)."""
from __future__ import annotations

import json
import math

import pytest

from tests.recorded import RECORDINGS, load_tool

RECORDED = RECORDINGS / "pretrain_losses_before_split.json"


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    # the log holds 6 decimals; fingerprints are float64 sums of float32 tensors
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=2e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    recorder = load_tool("record_pretrain_losses")
    recorded = json.loads(RECORDED.read_text())
    # the recording used the settings the script holds now (a changed script must be re-recorded first)
    assert recorded["base"] == recorder.BASE and recorded["runs_overrides"] == recorder.RUNS
    return recorded["runs"], recorder.run_all(tmp_path_factory.mktemp("pretrain_equivalence"))


@pytest.mark.parametrize("name", ["dino", "dino_device_views", "ibot_patch_recolour", "cross_view_sinkhorn_lut",
                                  "dense_contrastive_patch", "mae_alone", "dino_and_mae"])
def test_run_matches_the_losses_recorded_before_the_split(runs, name):
    before, now = runs[0][name], runs[1][name]
    for column, values in before["losses"].items():
        assert len(values) == len(now["losses"][column]) == 4, column
        assert all(map(_close, values, now["losses"][column])), (column, values, now["losses"][column])
    assert any(v is not None for v in before["losses"]["loss"])
    for key in ("teacher", "centers"):
        assert all(map(_close, before[key], now[key])), (key, before[key], now[key])
