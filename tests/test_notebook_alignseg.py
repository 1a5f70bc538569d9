"""Notebook 10_alignseg runs headless under the smoke profile and records sensible numbers; the Table II papermill
batch collects its runs into one table."""
import json

import pytest

from nbseg.notebook_runner import check_notebook, find_notebooks, run_notebooks

pytestmark = pytest.mark.notebook
NOTEBOOK = "10_alignseg"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb10")
    run_notebooks(find_notebooks([NOTEBOOK]), profile="smoke", out_dir=out)
    return out / NOTEBOOK


def test_notebook_is_clean():
    assert check_notebook(find_notebooks([NOTEBOOK])[0]) == []


def test_smoke_run_records_both_protocols_and_the_figures(executed):
    m = json.loads((executed / "metrics.json").read_text())
    assert m["smoke"] is True and m["variant"] == "official" and m["method"] == "AlignSeg"
    assert "embedded" in m["backbone"] and "RANDOM" not in m["backbone"] and "world/val" in m["dataset"]
    assert m["finished"] and m["steps"] == m["total_steps"] == 8 and m["n_images"] == 32
    for name in ("alignseg", "per-image k-means", "dataset k-means"):
        for protocol in ("hungarian", "per-image"):
            assert 0.0 <= m[f"{name}/{protocol}/miou"] <= 1.0, (name, protocol)
    # per-image matching is far more lenient than one matching over the split
    assert m["alignseg/per-image/miou"] > m["alignseg/hungarian/miou"]
    assert 0 < m["table_iv/mean image-adapted P^x/max_share"] <= 1
    for name in ("qualitative.png", "fig9_kmeans.png", "table_iv.png", "fig7_tsne.png"):
        assert (executed / name).stat().st_size > 10_000, name
    for name in ("evaluation.csv", "table_i.csv", "table_iv_adapted.csv", "run/checkpoint.pt", "run/metrics.json"):
        assert (executed / name).is_file(), name
    table_i = (executed / "table_i.csv").read_text()
    assert "paper (Liu et al. TPAMI 2024), as reported" in table_i and "nbseg, this run (official variant)" in table_i


def test_table_ii_smoke_batch(tmp_path):
    from nbseg.methods.alignseg.ablations import run_table_ii

    table = run_table_ii(tmp_path, ["baseline", "L_proto only"], profile="smoke")
    assert table["status"].tolist() == ["ok", "ok"]
    assert table["AlignSeg hungarian (STEGO avg) %"].between(0, 100).all()
    assert table["AlignSeg per-image (released path) %"].between(0, 100).all()
    deltas = table["Δ AlignSeg per-image (released path) % vs baseline (ours)"]
    assert deltas.iloc[0] == 0 and table["Δ vs the paper's baseline (paper)"].tolist() == [0.0, -40.0]
    assert (tmp_path / "table_ii.csv").is_file()
    assert not (tmp_path / "baseline" / NOTEBOOK / "qualitative.png").exists()      # the batch draws no figures
