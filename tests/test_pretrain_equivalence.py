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


def test_only_an_objective_knob_leaves_dino_as_published():
    """The default config runs DINO's own step and networks (no mask token, no MAE decoder); each objective knob,
    and nothing else (colour tables only change the views), selects the objectives' step."""
    from dataclasses import replace

    from nbseg.pretrain import PretrainConfig
    from nbseg.pretrain.build import build_networks
    from nbseg.pretrain.config import uses_objectives
    from nbseg.pretrain.dino import StudentTeacherNet
    from nbseg.pretrain.objectives.network import PatchStudentTeacherNet

    small = PretrainConfig(out_dim=16, head_hidden_dim=16, bottleneck_dim=8, global_size=16, local_size=8)
    assert not uses_objectives(small) and not uses_objectives(replace(small, colour_lut_p=0.5, augment_on="device"))
    for knob in ({"patch_loss_weight": 1.0}, {"cross_view_loss_weight": 1.0}, {"dense_contrastive_weight": 1.0},
                 {"mae_loss_weight": 1.0}, {"teacher_recolour": True}, {"teacher_targets": "sinkhorn"}):
        assert uses_objectives(replace(small, **knob)), knob
    student, teacher = build_networks(small)
    assert type(student) is StudentTeacherNet and type(teacher) is StudentTeacherNet
    patch_student, _ = build_networks(replace(small, patch_loss_weight=1.0, mae_loss_weight=1.0, mae_decoder_dim=16,
                                              mae_decoder_heads=2))
    assert isinstance(patch_student, PatchStudentTeacherNet)
    extra = set(patch_student.state_dict()) - set(student.state_dict())
    assert "mask_token" in extra and any(k.startswith("mae_decoder.") for k in extra)
    assert set(student.state_dict()) <= set(patch_student.state_dict())   # same checkpoint layout otherwise
