"""AlignSeg end to end on a tiny model: the released schedule in the shared loop, exact resume, the crop-feature
cache, evaluation with both protocols, rebuilding from checkpoints, the commands and the Table II collection.

Tiny: the embedded architecture at random init, the first 8 world train images as 32-px crops, batches of 4."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nbseg.cli import main as nbseg_main
from nbseg.methods.alignseg import CropFeatureCache
from nbseg.methods.alignseg.evaluation import (evaluate_alignseg, load_alignseg, load_alignseg_config, predict_features,
                                         run_alignseg, train_alignseg)
from nbseg.train import CheckpointError, load_checkpoint, step_schedule

TINY = {"random_init": True, "max_train_images": 8, "batch_size": 4, "epochs": 2, "global_size": 32,
        "local_size": 32, "n_prototypes": 4, "log_every": 1, "device": "cpu", "h": 0.2}
EVAL_LIMIT = 6


def tiny_cfg(**kw):
    return load_alignseg_config("world", {**TINY, **kw})


def alignseg_keys(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith("alignseg/")}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("alignseg") / "full"
    return run_alignseg(tiny_cfg(), run_dir, progress=False, eval_limit=EVAL_LIMIT, kmeans=True), run_dir


# ----------------------------------------------------------------------------------------------------------
# Schedule and optimiser groups
# ----------------------------------------------------------------------------------------------------------

def test_step_schedule_is_steplr_per_epoch():
    lr = step_schedule(5e-4, epochs=10, iters_per_epoch=2, step_epochs=3, gamma=0.5)
    assert lr.shape == (20,)
    per_epoch = lr[::2]
    assert per_epoch.tolist() == pytest.approx([5e-4] * 3 + [2.5e-4] * 3 + [1.25e-4] * 3 + [6.25e-5])
    assert (lr[1::2] == lr[::2]).all()                                  # constant within an epoch
    warm = step_schedule(1.0, epochs=4, iters_per_epoch=2, step_epochs=2, gamma=0.1, warmup_epochs=1)
    assert warm.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="step_epochs"):
        step_schedule(1.0, 2, 2, step_epochs=0, gamma=0.5)


def test_shared_loop_step_schedule_on_the_toy(tmp_path):
    from tests.test_train_loop import train

    train(tmp_path / "r", lr_schedule="step", step_epochs=1, step_gamma=0.5, warmup_epochs=0)
    from tests.test_train_loop import log_rows

    lrs = [float(r["lr"]) for r in log_rows(tmp_path / "r")]          # 3 epochs of 4 steps
    assert lrs == pytest.approx([0.02] * 4 + [0.01] * 4 + [0.005] * 4)
    from nbseg.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_schedule"):
        train(tmp_path / "bad", lr_schedule="linear")


@pytest.mark.parametrize("name", ["world", "voc", "cocostuff27"])
def test_shipped_configs_use_the_released_schedule(name):
    cfg = load_alignseg_config(name)
    assert (cfg.lr_schedule, cfg.step_epochs, cfg.step_gamma, cfg.weight_decay) == ("step", 3, 0.5, 0.04)
    assert cfg.variant == "official" and cfg.lr == (2e-3 if name == "world" else 5e-4)   # world: see its YAML


def test_released_optimiser_in_the_checkpoint(full_run):
    _, run_dir = full_run
    ckpt = load_checkpoint(run_dir, expected_kind="AlignSeg")
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.04, 0.0]          # prototypes, biases, norms: no decay
    names = [n for n, _ in sorted(ckpt["trainable"].items())]
    assert "decoder.prototypes" in names
    assert ckpt["config"]["lr_schedule"] == "step" and ckpt["config"]["step_epochs"] == 3
    rows = [json.loads(json.dumps(r)) for r in _log(run_dir)]
    assert {float(r["lr"]) for r in rows} == {2e-3}                    # 2 epochs < step_epochs: no decay yet


def _log(run_dir):
    from nbseg.train.logs import read_log

    return read_log(run_dir / "log.csv")


# ----------------------------------------------------------------------------------------------------------
# Resume, cache, evaluation
# ----------------------------------------------------------------------------------------------------------

def test_interrupted_mid_epoch_and_resumed_equals_uninterrupted(full_run, tmp_path):
    full, full_dir = full_run
    stopped = run_alignseg(tiny_cfg(max_steps=3), tmp_path / "r", progress=False, eval_limit=EVAL_LIMIT,
                           kmeans=False)                                 # epoch 1, batch 1 of 2
    assert stopped.summary["steps"] == 3 and not stopped.metrics["finished"]
    resumed = run_alignseg(tiny_cfg(), tmp_path / "r", progress=False, eval_limit=EVAL_LIMIT, kmeans=False)
    assert resumed.summary["steps"] == 4 and resumed.metrics["finished"]
    a, b = load_checkpoint(full_dir), load_checkpoint(tmp_path / "r")
    for key in a["trainable"]:
        assert torch.equal(a["trainable"][key], b["trainable"][key]), key
    assert alignseg_keys(resumed.metrics) == alignseg_keys(full.metrics)   # the same final metrics
    assert [r["loss"] for r in _log(tmp_path / "r")] == [r["loss"] for r in _log(full_dir)]


def test_feature_cache_gives_the_same_run_and_is_reused(full_run, tmp_path):
    _, full_dir = full_run
    cache = CropFeatureCache()
    train_alignseg(tiny_cfg(), tmp_path / "a", progress=False, feature_cache=cache)
    assert cache.misses == 4 and cache.hits == 0 and len(cache) == 8 * 2
    a, b = load_checkpoint(full_dir), load_checkpoint(tmp_path / "a")
    assert all(torch.equal(a["trainable"][k], b["trainable"][k]) for k in a["trainable"])
    train_alignseg(tiny_cfg(n_prototypes=3, variant="paper", n_local=1), tmp_path / "b", progress=False,
                   feature_cache=cache)                                  # same crops: no backbone pass
    assert cache.hits == 4 and cache.misses == 4
    from nbseg.errors import ConfigError

    with pytest.raises(ConfigError, match="one cache per backbone"):
        train_alignseg(tiny_cfg(global_size=40, local_size=40), tmp_path / "c", progress=False, feature_cache=cache)


def test_evaluation_has_both_protocols_and_the_baselines(full_run):
    run, run_dir = full_run
    ev = run.evaluation
    assert set(zip(ev.table["method"], ev.table["protocol"])) == {
        (m, p) for m in ("AlignSeg (official)", "per-image k-means", "dataset k-means")
        for p in ("hungarian", "per-image")} | {("AlignSeg (official)", "per-image-released")}
    assert ev.table["miou"].between(0, 1).all() and (ev.table["n_images"] == EVAL_LIMIT).all()
    assert set(ev.table["scored_at"]) == {"96x96", "100x100"}
    # every row says how its labels were made; the released row is the release's path, scored at 100x100
    released = ev.table[ev.table["protocol"] == "per-image-released"].iloc[0]
    assert released["path"].startswith("AlignSeg release") and released["scored_at"] == "100x100"
    assert ev.table["path"].notna().all() and ev.table["averaging"].notna().all()
    grid = predict_features(run.method, ev.features, released_size=100)
    assert grid.shape == (EVAL_LIMIT, 100, 100)
    from nbseg.evaluation import evaluate
    again = evaluate(list(grid), list(ev.features.labels), 4, ev.dataset.num_classes, protocol="per-image",
                     eval_size=100)
    assert released["miou"] == pytest.approx(again.miou)
    # dataset-level rows also carry the STEGO averaging, which can only add zeros to the mean
    hung = ev.table[ev.table["protocol"] == "hungarian"]
    assert (hung["miou_stego"] <= hung["miou"] + 1e-9).all()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["variant"] == "official" and "RANDOM INIT" in m["backbone"] and m["finished"]
    assert "first 6 scored" in m["dataset"] and m["K"] == 4
    for key in ("alignseg/hungarian/miou", "alignseg/per-image/miou", "per-image k-means/hungarian/miou",
                "dataset k-means/per-image/miou"):
        assert 0 <= m[key] <= 1, key
    assert (run_dir / "evaluation.csv").is_file()
    # Eq. (1)-(3) from cached tokens is the end-to-end prediction
    assert torch.equal(predict_features(run.method, ev.features), run.method.predict(ev.features.images))


def test_rebuild_from_checkpoint_and_wrong_checkpoints(full_run, tmp_path):
    run, run_dir = full_run
    method, cfg, state = load_alignseg(run_dir)
    assert cfg.n_prototypes == 4 and state["step"] == 4
    again = evaluate_alignseg(method, run.evaluation.dataset, features=run.evaluation.features, kmeans=False)
    assert again.miou() == run.evaluation.miou() and again.miou(protocol="per-image") == run.evaluation.miou(
        protocol="per-image")
    from tests.test_train_loop import train

    train(tmp_path / "toy", max_steps=1)
    with pytest.raises(CheckpointError, match="checkpoint of 'Toy', not of 'AlignSeg'"):
        load_alignseg(tmp_path / "toy")


# ----------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------

def test_cli_train_resume_and_evaluate(full_run, tmp_path, capsys):
    _, full_dir = full_run
    flags = ["--no-progress", "--eval-limit", str(EVAL_LIMIT), "--no-kmeans"]
    args = ["train", "alignseg", str(tmp_path / "cli"), *[f"{k}={v}" for k, v in TINY.items()]]
    assert nbseg_main(args + ["max_steps=1"] + flags) == 0
    assert "rerun to resume" in capsys.readouterr().out
    assert nbseg_main(args + flags + ["--epoch-eval"]) == 0
    out = capsys.readouterr().out
    from nbseg.train.logs import read_log

    curve = read_log(tmp_path / "cli/metrics.csv")                     # scored at the epoch ends after the resume
    assert [r["step"] for r in curve] == ["2", "4"] and 0 <= float(curve[-1]["val_hungarian_miou"]) <= 1
    assert "finished" in out and "hungarian" in out and "per-image" in out
    m = json.loads((tmp_path / "cli/metrics.json").read_text())
    assert m["steps"] == 4 and m["variant"] == "official"
    assert alignseg_keys(m) == alignseg_keys(json.loads((full_dir / "metrics.json").read_text()))
    assert nbseg_main(["evaluate", str(tmp_path / "cli"), "--limit", "4", "--no-kmeans", "--no-progress",
                       "--json", str(tmp_path / "ev.json")]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["n_images"] == 4
    from tests.test_train_loop import train

    train(tmp_path / "toy", max_steps=1)
    assert nbseg_main(["evaluate", str(tmp_path / "toy")]) == 2
    assert "not of 'AlignSeg'" in capsys.readouterr().err


def test_segment_writes_labels_and_overlays_and_skips_corrupt_files(full_run, tmp_path, capsys):
    from PIL import Image

    _, run_dir = full_run
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "b.png")
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    code = nbseg_main(["segment", "--checkpoint", str(run_dir), str(images), "--out", str(out), "--no-progress"])
    assert code == 1                                                     # c.png was skipped and reported
    text = capsys.readouterr().out
    assert "segmented 2 image(s)" in text and "c.png" in text and "c.png cannot be read" in text
    with Image.open(out / "a.png") as label:
        assert label.mode == "P" and label.size == (70, 50)
        assert np.asarray(label).max() < 4
    with Image.open(out / "a_overlay.png") as overlay:
        assert overlay.mode == "RGB" and overlay.size == (70, 50)
    assert (out / "b.png").is_file() and not (out / "c_overlay.png").exists()
    assert not list(out.glob(".*.tmp"))                                  # atomic writes leave no temporary files
    (tmp_path / "other").mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "other" / "a.png")
    assert nbseg_main(["segment", "--checkpoint", str(run_dir), str(images / "a.jpg"),
                       str(tmp_path / "other" / "a.png"), "--out", str(out)]) == 2
    assert "would both write a.png" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------

def test_tables_label_the_paper_and_this_run(full_run):
    from nbseg.methods.alignseg.figures import table_i, table_i_wide, table_iv

    run, _ = full_run
    t1 = table_i(run.evaluation)
    paper = t1[t1["source"].str.startswith("paper")]
    assert paper[(paper["method"] == "AlignSeg") & (paper["dataset"] == "PVOC val")]["miou %"].item() == 69.5
    # each paper row says which protocol produced it: AlignSeg's own per image, the cited baselines dataset-level
    assert paper.loc[paper["method"] == "AlignSeg", "protocol"].str.startswith("per-image").all()
    assert paper.loc[paper["method"] != "AlignSeg", "protocol"].str.startswith("dataset-level").all()
    ours = t1[t1["source"].str.startswith("nbseg")]
    assert len(ours) == 7 and ours["encoder"].str.contains("RANDOM INIT").all()
    assert ours["protocol"].str.contains("release|nbseg|k-means").all() and (ours["variant"] == "official").all()
    assert set(ours["averaging"]) == {"classes present or predicted (STEGO)", "per image: classes present in it"}
    assert table_i_wide(t1).shape[0] == len(set(zip(t1["source"], t1["method"], t1["encoder"], t1["evaluation"])))
    t4 = table_iv(run.method, run.evaluation.features, run.evaluation.dataset)
    assert t4.shape[0] == 4 and np.allclose(t4.sum(axis=1), 1.0)


def test_table_ii_collection(tmp_path):
    from nbseg.methods.alignseg.ablations import PAPER_COLUMN, collect_table_ii, table_ii_sets

    assert list(table_ii_sets(smoke=True)) == ["baseline", "L_corr only", "L_proto only"]
    assert table_ii_sets(["L_corr only"])["L_corr only"] == {"OVERRIDES": {"alpha": 0.0}}
    (tmp_path / "baseline/10_alignseg").mkdir(parents=True)
    (tmp_path / "baseline/10_alignseg/metrics.json").write_text(json.dumps(
        {"variant": "official", "K": 10, "alignseg/hungarian/miou_stego": 0.1, "alignseg/per-image/miou": 0.5,
         "alignseg/per-image-released/miou": 0.4}))
    (tmp_path / "K=5/10_alignseg").mkdir(parents=True)
    (tmp_path / "K=5/10_alignseg/metrics.json").write_text(json.dumps(
        {"variant": "official", "K": 5, "alignseg/per-image-released/miou": 0.35}))
    table = collect_table_ii(tmp_path, ["baseline", "L_proto only", "K=5"])
    assert table["status"].tolist()[0] == "ok" and table["status"].tolist()[1].startswith("no metrics.json")
    assert table["AlignSeg hungarian (STEGO avg) %"].tolist()[0] == pytest.approx(10.0)
    assert table[PAPER_COLUMN].tolist() == [73.2, 29.5, 69.5]
    # K differs from the paper's rows: the table compares differences to each side's own baseline
    ours = table["Δ AlignSeg per-image (released path) % vs baseline (ours)"].tolist()
    assert ours[0] == 0 and np.isnan(ours[1]) and ours[2] == pytest.approx(-5.0)
    assert table["Δ vs the paper's baseline (paper)"].tolist() == [0.0, pytest.approx(29.5 - 69.5), -3.7]
