"""Notebook 11_dcn runs headless under the smoke profile and records its tables, figures and region counts; the DCN
workflow functions it calls (train / resume / reload, evaluate, the region explorer) work on a tiny run."""
import json

import pytest
import torch

from nbseg.notebook_runner import check_notebook, find_notebooks, run_notebooks

NOTEBOOK = "11_dcn"
PAPER_SOURCE = "paper (Li et al. 2022), as reported"


# ----------------------------------------------------------------------------------------------------------
# The notebook, smoke profile
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb11")
    run_notebooks(find_notebooks([NOTEBOOK]), profile="smoke", out_dir=out,
                  overrides={"CACHE_ROOT": str(out / "feature_cache")})
    return out / NOTEBOOK


def test_notebook_is_clean_and_lists_the_open_choices():
    import nbformat

    path = find_notebooks([NOTEBOOK])[0]
    assert check_notebook(path) == []
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    for choice in ("Modularity normalisation", "1/(2m)", "delta", "Prototype initialisation", "Stages",
                   "2-means"):
        assert choice in text, choice


@pytest.mark.notebook
def test_smoke_run_metrics(executed):
    m = json.loads((executed / "metrics.json").read_text())
    assert m["smoke"] is True and m["method"] == "DCN" and m["random_init"] is False
    assert "embedded" in m["backbone"] and "RANDOM" not in m["backbone"] and m["dataset"].startswith("world/val")
    assert m["finished"] and m["steps"] == m["total_steps"] == 24 and m["train_images"] == 64
    assert m["n_images"] == 32 and m["knn_gallery/images"] == 32 and m["table1/n_seeds"] == 3
    # Table 1 and the baseline: fractions, one mIoU per k-means seed
    for key in ("table1/miou_mean", "table1/pixel_acc_mean", "baseline_patch_kmeans/miou_mean",
                "baseline_patch_kmeans/pixel_acc_mean"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["table1/miou_std"] >= 0 and len(m["table1/miou_per_seed"]) == 3
    assert min(m["table1/miou_per_seed"]) <= m["table1/miou_mean"] <= max(m["table1/miou_per_seed"])
    assert m["dcn_minus_baseline_miou"] == pytest.approx(m["table1/miou_mean"] - m["baseline_patch_kmeans/miou_mean"])
    for k in (1, 3, 5, 10):
        assert 0.0 <= m[f"table2/k={k}/miou"] <= 1.0 and 0.0 <= m[f"table2/k={k}/pixel_acc"] <= 1.0
    # region counts: at least one region, at most K, one histogram entry per image
    assert 1 <= m["regions/min"] <= m["regions/mean"] <= m["regions/max"] <= m["n_prototypes"] == 5
    assert sum(m["regions/histogram"]) == m["n_images"] and 0 < m["regions/foreground_fraction"] <= 1
    for comparison in ("gt", "gt, regions >= 1%", "full", "full, regions >= 1%"):
        for kind in ("pearson", "spearman"):
            value = m[f"correlation/{comparison}/{kind}"]
            assert value is None or -1.0 <= value <= 1.0, (comparison, kind, value)
        assert 1 <= m[f"correlation/{comparison}/mean_regions"] <= 5
    assert m["correlation/gt, regions >= 1%/mean_regions"] <= m["correlation/gt/mean_regions"]
    # the paper's numbers, labelled as the paper's
    assert "VOC" in m["paper/source"] and "ViT-S/8" in m["paper/source"] and "paper" in m["paper/source"]
    assert (m["paper/table1/miou_mean_percent"], m["paper/table1/miou_std_percent"]) == (47.1, 2.4)
    assert m["paper/table2/k=5/miou_percent"] == 57.53 and m["paper/table2/k=1/pixel_acc_percent"] == 88.17


@pytest.mark.notebook
def test_smoke_run_files(executed):
    for name in ("fig4_regions.png", "fig5_retrieval.png", "region_counts.png", "regions_vs_classes.png"):
        assert (executed / name).stat().st_size > 10_000, name
    for name in ("table_1.csv", "table_2.csv", "region_counts.csv", "count_correlations.csv", "run/checkpoint.pt",
                 "run/loss_curve.png"):
        assert (executed / name).is_file(), name
    for table in ("table_1.csv", "table_2.csv"):
        text = (executed / table).read_text()
        assert PAPER_SOURCE in text and "nbseg, this run" in text and "DINO ViT-S/8" in text and "embedded" in text
    assert len((executed / "region_counts.csv").read_text().splitlines()) == 1 + 32
    assert (executed.parent / "feature_cache").is_dir()           # the cache went where CACHE_ROOT said


# ----------------------------------------------------------------------------------------------------------
# The library functions, on a tiny run (random-init backbone)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from nbseg.methods.dcn import evaluation as de

    root = tmp_path_factory.mktemp("dcn_tiny")
    cfg = de.notebook_config(None, {"random_init": True, "input_size": 48, "region_size": 32, "n_stages": 1,
                                    "cache_root": str(root / "cache"), "device": "cpu", "n_fg_classes": 2,
                                    "batch_size": 8, "epochs": 2}, max_steps=4, limit=16)
    method, summary = de.train_dcn(cfg, root / "run", progress=False)
    ev = de.evaluate_dcn(method, val_limit=12, seeds=[0, 1], ks=(1, 3), progress=False)
    return cfg, root / "run", method, summary, ev


def test_train_resumes_and_reloads(tiny):
    from nbseg.methods.dcn import evaluation as de

    cfg, run_dir, method, summary, _ = tiny
    assert summary["steps"] == summary["total_steps"] == 4 and summary["finished"]
    again, second = de.train_dcn(cfg, run_dir, progress=False)          # finished: only loaded
    assert second["steps"] == 4
    loaded, loaded_cfg, state = de.load_dcn(run_dir)
    assert loaded_cfg == cfg and state["step"] == 4
    patches = torch.randn(2, 6, 6, 192)
    assert torch.equal(loaded.predict_features(patches, (48, 48)), method.predict_features(patches, (48, 48)))
    assert torch.equal(again.predict_features(patches, (48, 48)), method.predict_features(patches, (48, 48)))


def test_evaluation_tables_and_metrics(tiny):
    ev = tiny[-1]
    assert ev.n_images == 12 and ev.description["random_init"] and "RANDOM INIT" in ev.title()
    t1, t2 = ev.table_1(), ev.table_2()
    assert set(t1["source"]) == {"paper (Li et al. 2022), as reported", "nbseg, this run"}
    ours = t1[t1["source"] == "nbseg, this run"]
    assert ours["miou %"].between(0, 100).all()
    # all three head reductions are reported, and every row says how it was scored
    assert {f"DCN regions + k-means (foreground {r})" for r in ("min-head", "max-head", "mean-head")} <= set(
        ours["method"])
    assert ours["protocol"].str.contains("Hungarian").all() and ours["miou STEGO %"].notna().all()
    assert (ours["miou STEGO %"] <= ours["miou %"] + 1e-9).all()            # STEGO's averaging can only add zeros
    assert t2.loc[t2["source"] == "nbseg, this run", "protocol"].str.contains("training ground truth").all()
    assert sorted(t2.loc[t2["source"] == "nbseg, this run", "k"]) == [1, 3]
    counts = ev.region_counts()
    assert len(counts) == 12 and (counts["regions >= 1%"] <= counts["regions"]).all()
    assert (counts["foreground regions"] <= counts["regions"]).all() and (counts["regions"] >= 1).all()
    semantic = ev.semantic_maps()
    assert len(semantic) == 12 and semantic[0].shape == ev.val.gt[0].shape
    m = ev.metrics()
    assert json.loads(json.dumps(m)) == m                               # valid JSON (no NaN)
    assert m["regions/total"] == int(counts["regions"].sum())


def test_region_explorer_without_a_browser(tiny):
    pytest.importorskip("ipywidgets")
    from nbseg.methods.dcn import figures as dfig

    ev = tiny[-1]
    box = dfig.region_explorer(ev)
    assert box.state["index"] == 0 and box.state["id"] == ev.val.ids[0]
    box.children[0].value = 3
    s = box.state
    assert s["index"] == 3 and s["regions"] == int(ev.regions_per_image()[3]) == len(s["region_ids"])
    assert sum(s["foreground"]) == s["foreground_regions"]
    assert dfig.show_indices(ev, 4) == sorted(dfig.show_indices(ev, 4), key=lambda i: int(ev.regions_per_image()[i]))


def test_open_choices_come_from_the_docstrings():
    from nbseg.methods.dcn.evaluation import open_choices

    parts = open_choices()
    dcn, regions = parts.values()
    assert dcn.startswith("1. **Modularity normalisation.**") and "\n11. **Regions.**" in dcn
    assert "The choices of the region-classification stage" not in dcn
    assert regions.startswith("1. ") and "\n7. Table 2" in regions


def test_cli_train_dcn_trains_resumes_and_writes_metrics(tmp_path, capsys):
    """``nbseg train dcn RUN_DIR key=value ...``: a stopped run resumes when the command is run again, and the
    evaluation lands in RUN_DIR/metrics.json."""
    from nbseg.cli import main

    args = ["train", "dcn", str(tmp_path / "run"), "random_init=true", "input_size=48", "region_size=32",
            "n_stages=1", f"cache_root={tmp_path / 'cache'}", "device=cpu", "n_fg_classes=2", "batch_size=8",
            "epochs=1", "cache_limit=16"]
    assert main(args + ["max_steps=1", "--no-eval", "--no-progress"]) == 0
    assert "stopped at step 1 of 2" in capsys.readouterr().out
    assert main(args + ["--eval-limit", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "DCN in" in out and "finished" in out and "paper (Li et al. 2022), as reported" in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 2 and m["finished"] and 0 <= m["table1/miou_mean"] <= 1
