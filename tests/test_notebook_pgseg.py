"""Notebook 13_pgseg runs headless under the smoke profile and records its zero-shot scores, Table 4 and figures;
the prompt explorer's state follows its controls."""
import json

import pytest
import torch

from nbseg.notebook_runner import check_notebook, find_notebooks, run_notebooks

NOTEBOOK = "13_pgseg"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb13")
    run_notebooks(find_notebooks([NOTEBOOK]), profile="smoke", out_dir=out)
    return out / NOTEBOOK


def test_notebook_is_clean():
    assert check_notebook(find_notebooks([NOTEBOOK])[0]) == []


@pytest.mark.notebook
def test_smoke_run_metrics_and_figures(executed):
    m = json.loads((executed / "metrics.json").read_text())
    assert m["smoke"] is True and m["method"] == "pgseg" and m["variant"] == "paper" and m["finished"]
    assert m["backbone"] == "groupvit-from-scratch" and m["dataset"] == "world/val" and m["n_images"] == 8
    for key in ("pgseg/full/miou", "pgseg/voc/miou", "pgseg/full/synonyms_miou", "kmeans/full/miou"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["table4_rows"] == ["groupvit", "inpr+tnpr+hrs"] and m["table4_seeds"] == [0]
    assert set(m["table4/claim/full/supported"] for _ in [0]) <= {True, False}
    assert m["table4/claim/full/std"] == 0.0 and m["table4/claim/full/supported"] is False   # one seed: never
    for name in ("stages.png", "zero_shot_prompts.png", "table_4.png", "table_1.csv", "table_4.csv"):
        assert (executed / name).is_file(), name
    table_1 = (executed / "table_1.csv").read_text()
    assert "as reported" in table_1 and "nbseg (world, from scratch)" in table_1


def test_prompt_state_follows_the_prompts():
    from nbseg.methods.pgseg import SMOKE_PROFILE, PGSeg
    from nbseg.methods.pgseg.figures import group_maps, prompt_state
    from nbseg.methods.workflow import load_method_config
    from nbseg.methods import get_method

    spec = get_method("pgseg")
    cfg = load_method_config(spec, None, SMOKE_PROFILE)
    model = PGSeg(cfg)
    spec.training_dataset(cfg, model, progress=False)
    model.eval()
    images = torch.rand(2, 3, 96, 96)
    state = prompt_state(model, images, 1, "ball, grass")
    assert state["names"] == ["ball", "grass"] and state["prediction"].shape == (96, 96)
    assert state["prediction"].max() <= 1 and set(state["present"]) <= {"ball", "grass"}
    assert len(prompt_state(model, images, 0, " , ")["names"]) == 13          # empty: the world's classes
    maps = group_maps(model, images, ["ball", "box"])
    assert maps["stage 1 groups"].max() < cfg.groups_stage1 and maps["stage 2 groups (A1 A2)"].max() < cfg.groups_stage2
    assert all(v.shape == (2, 96, 96) for v in maps.values())
