"""Notebook 14_san runs headless under the smoke profile: it trains SAN from scratch in stages (resuming its run
folder), scores it with both test-time semantics, draws its figures, runs the Table-5 variants and records what
produced every number (no pretrained model; the paper's numbers labelled as the paper's)."""
import json

import pandas as pd
import pytest

from nbseg.notebook_runner import check_notebook, find_notebooks, run_notebooks

NOTEBOOK = "14_san"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb14")
    run_notebooks(find_notebooks([NOTEBOOK]), profile="smoke", out_dir=out)
    return out / NOTEBOOK


def test_notebook_is_clean_and_lists_the_open_choices():
    import nbformat

    path = find_notebooks([NOTEBOOK])[0]
    assert check_notebook(path) == []
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    for choice in ("Pixel-wise encoder", "Token matcher", "Evaluation batch composition", "Orthogonality",
                   "S S^T - I", "no pretrained model"):
        assert choice in text, choice


@pytest.mark.notebook
def test_smoke_run_metrics_and_files(executed):
    m = json.loads((executed / "metrics.json").read_text())
    assert m["smoke"] is True and m["method"] == "SAN" and m["model"] == "SAN trained from scratch, no pretrained model"
    assert m["dataset"].startswith("world/val") and m["n_images"] == 16 and m["finished"] is False
    assert m["steps"] == 6 and m["stages"] == [2, 4, 6]
    for key in ("san/batch/coarse/pixel_acc", "san/memory/full/miou", "rgb_kmeans/coarse/pixel_acc",
                "frozen/coarse/pixel_acc"):
        assert 0 <= m[key] <= 1, key
    assert 1 <= m["san/batch/clusters_over_1pct"] <= 3 and m["san/batch/effective_rank"] >= 1
    assert isinstance(m["table5/verdict"], bool) and m["table5/no_reconstruction/paper_acc"] == 34.2
    assert "Zhang et al. 2023" in m["paper/source"]
    for name in ("segmentations_during_training.png", "semantic_attention.png", "segmentations.png"):
        assert (executed / name).stat().st_size > 10_000, name
    table5 = pd.read_csv(executed / "table5.csv")
    assert list(table5["variant"][:4]) == ["full", "no_reconstruction", "no_token_matcher", "per_image_semantics"]
    beside = pd.read_csv(executed / "beside_frozen.csv")
    assert set(beside["pretrained model"]) == {"none (trained from scratch)", "none (k-means of pixels)",
                                               "yes (frozen)"}
    tables = pd.read_csv(executed / "paper_tables.csv")
    assert (tables["source"].str.contains("as reported") | tables["source"].str.contains("no pretrained model")).all()
