"""Notebook 12_transfgu runs headless under the smoke profile and records its stages, rounds and tables; the
commands train / evaluate / segment / ablate a TransFGU run through the registry, and a run interrupted during the
pseudo-label stage and during a round resumes to the same final metrics."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nbseg.notebook_runner import check_notebook, find_notebooks, run_notebooks

NOTEBOOK = "12_transfgu"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("nb12")
    run_notebooks(find_notebooks([NOTEBOOK]), profile="smoke", out_dir=out,
                  overrides={"CACHE_ROOT": str(out / "cache")})
    return out / NOTEBOOK


def test_notebook_is_clean():
    assert check_notebook(find_notebooks([NOTEBOOK])[0]) == []


@pytest.mark.notebook
def test_smoke_run_metrics_and_files(executed):
    m = json.loads((executed / "metrics.json").read_text())
    assert m["smoke"] is True and m["method"] == "TransFGU" and m["variant"] == "official"
    assert "embedded" in m["backbone"] and "not DINO" in m["backbone_description"] and not m["random_init"]
    assert m["finished"] and m["steps"] == m["total_steps"] == 16 and m["rounds"] == 3
    assert m["n_images"] == 16 and m["K"] == 13 and m["dataset"].startswith("world/val")
    for key in ("student/miou", "pseudo_labels/miou", "kmeans/miou", "table3/trained/miou", "concepts/purity",
                "concepts/nmi"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["concepts/n_crops"] > 0
    assert m["paper/table3/COCO-S-27/bootstrapped_percent"] == 16.19 and "Yin" in m["paper/source"]
    for name in ("crop_concepts.png", "gradcam.png", "rounds.png", "transfgu_segmentations.png"):
        assert (executed / name).stat().st_size > 10_000, name
    table = (executed / "table_3.csv").read_text()
    assert "paper (Yin et al. 2022), as reported" in table and "nbseg, this run" in table and "embedded" in table
    curve = (executed / "run" / "metrics.csv").read_text().splitlines()
    assert len(curve) == 1 + 4                                           # one row per epoch


TINY = ["random_init=true", "labels=coarse", "image_size=48", "crop_size=32", "train_crop_size=32",
        "crop_scales=[0.6,0.5,0.3]",
        "decoder_layers=1", "epochs=3", "bootstrap_start=1", "bootstrap_intervals=[1]", "batch_size=4",
        "train_limit=8", "bank_limit=4", "chunk_size=4", "kmeans_iters=10", "device=cpu", "log_every=1",
        "checkpoint_every=1"]


def test_cli_train_evaluate_segment(tmp_path, capsys):
    from nbseg.cli import main

    run = tmp_path / "run"
    args = ["train", "transfgu", str(run), *TINY, f"cache_root={tmp_path / 'cache'}"]
    flags = ["--eval-limit", "4", "--no-progress"]
    assert main(args + ["max_steps=2"] + flags + ["--no-eval"]) == 0
    assert "stopped at step 2 of 6" in capsys.readouterr().out
    assert main(args + flags) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "initial pseudo labels (official)" in out and "TransFGU student" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 6 and 0 <= m["student/miou"] <= 1 and m["variant"] == "official"
    assert main(["evaluate", str(run), "--limit", "3", "--json", str(tmp_path / "ev.json"), "--no-progress",
                 "--figures", str(tmp_path / "figs")]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["n_images"] == 3
    assert (tmp_path / "figs" / "transfgu_segmentations.png").is_file()
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    assert main(["segment", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "seg")]) == 0
    with Image.open(tmp_path / "seg" / "img.png") as label:
        assert label.size == (56, 40) and np.asarray(label).max() < 3


def test_cli_ablate_runs_table_5_rows(tmp_path, capsys):
    from nbseg.cli import main

    code = main(["ablate", "transfgu", str(tmp_path / "abl"), *TINY, "max_steps=2",
                 f"cache_root={tmp_path / 'cache'}", "--only", "peer+unc+div", "ce", "--eval-limit", "3",
                 "--no-progress"])
    assert code == 0
    text = (tmp_path / "abl" / "ablations.csv").read_text()
    assert "Table 5 (VOC): CE" in text and "34.24" in text and "37.15" in text


def _final_metrics(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k.endswith("miou") or k.endswith("pixel_acc") or k == "final_loss"}


def test_interrupted_pseudo_labels_and_round_resume_to_the_same_metrics(tmp_path):
    """Killed while the pseudo-label bank is written (after its first chunk), and stopped mid-round (inside round 2,
    after the first teacher refresh): rerunning finishes both and ends with the metrics of an uninterrupted run."""
    from nbseg.methods import get_method
    from nbseg.methods.transfgu import evaluation as E
    from nbseg.methods.base import frozen_backbone
    from nbseg.methods.workflow import load_method_config, run_method

    spec = get_method("transfgu")
    args = [a for a in TINY if not a.startswith("checkpoint_every")] + ["checkpoint_every=1"]

    def cfg_for(root, **extra):
        return load_method_config(spec, "world", args + [f"cache_root={root}"] + [f"{k}={v}" for k, v in
                                                                                  extra.items()])

    straight = run_method(spec, cfg_for(tmp_path / "c1"), tmp_path / "r1", eval_limit=4, progress=False)

    cfg = cfg_for(tmp_path / "c2")
    backbone = frozen_backbone(cfg)

    def die(chunk):
        if chunk == 1:
            raise KeyboardInterrupt("killed during the pseudo-label stage")

    with pytest.raises(KeyboardInterrupt):
        E.prepare(cfg, backbone, progress=False, on_chunk=die)
    partial = list((tmp_path / "c2").glob("transfgu_pseudo_*"))
    assert partial and (partial[0] / "progress.json").is_file() and not (partial[0] / "manifest.json").exists()
    stopped = run_method(spec, cfg_for(tmp_path / "c2", max_steps=3), tmp_path / "r2", eval_limit=4, progress=False)
    assert stopped.summary["steps"] == 3 and int(stopped.model.round) == 1        # inside round 2
    resumed = run_method(spec, cfg, tmp_path / "r2", eval_limit=4, progress=False)
    assert resumed.summary["finished"] and int(resumed.model.round) == 2
    assert _final_metrics(tmp_path / "r2") == _final_metrics(tmp_path / "r1")
    for a, b in zip(straight.model.student.state_dict().values(), resumed.model.student.state_dict().values()):
        assert torch.equal(a, b)
