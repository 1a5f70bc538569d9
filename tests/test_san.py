"""SAN: SEAT, the token matcher and the losses on hand-derived values; the collapse diagnostics and the pixel k-means
baseline on hand-made data; the model's batch dependence and its two test-time semantics; the claim's verdict rule;
the views; a run killed mid-training resumes to the same final metrics; the generic commands through the registry."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from nbseg.cli import main as nbseg_main
from nbseg.errors import ConfigError, NbsegError
from nbseg.evaluation.collapse import (cluster_marginal, clusters_holding, collapse_diagnostics, effective_rank,
                                       marginal_entropy)
from nbseg.evaluation.pixel_baselines import pixel_kmeans
from nbseg.methods import get_method
from nbseg.methods.san.claim import collapsed, summarise, verdict
from nbseg.methods.san.data import eval_view, random_view
from nbseg.methods.san.losses import consistency_loss, orthogonality_loss, reconstruction_loss
from nbseg.methods.san.model import SAN, SANConfig
from nbseg.methods.san.seat import (batchwise_tokens, class_weights, matched_semantics, seat, semantic_logits,
                                    segment_from_logits)
from nbseg.methods.workflow import load_method_config
from nbseg.train import load_checkpoint

TINY = {"embed_dim": 8, "vit_depth": 1, "vit_heads": 2, "crop_size": 16, "n_prototypes": 3, "decoder_hidden": 4,
        "device": "cpu"}
TINY_CLI = ["embed_dim=8", "vit_depth=1", "vit_heads=2", "crop_size=32", "prescale=0.3333333333", "limit=16",
            "batch_size=4", "epochs=3", "device=cpu", "log_every=1"]


# ----------------------------------------------------------------------------------------------------------
# SEAT and the token matcher, Eq. (3)-(4)
# ----------------------------------------------------------------------------------------------------------

def test_class_weights_simplex_sigmoid_none():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert torch.allclose(class_weights(logits, "simplex"), torch.tensor([[0.25, 0.75]]))
    assert torch.allclose(class_weights(torch.zeros(1, 2), "sigmoid"), torch.tensor([[0.5, 0.5]]))
    assert torch.equal(class_weights(logits, "none"), torch.ones(1, 2))
    with pytest.raises(ValueError, match="simplex"):
        class_weights(logits, "softmax")


def test_matched_semantics_scales_each_embedding_by_its_weight():
    p = torch.tensor([[0.25, 0.75]])
    zeta = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(matched_semantics(p, zeta), torch.tensor([[[0.25, 0.0], [0.0, 1.5]]]))
    per_image = torch.stack([zeta, 2 * zeta])                                   # (B, N, P)
    out = matched_semantics(torch.ones(2, 2), per_image)
    assert torch.equal(out, per_image)


def test_seat_by_hand():
    q = torch.tensor([[[2.0, 0.0]]])                       # one pixel, P = 2
    gamma = torch.eye(2)[None]                             # two orthonormal semantics
    logits = semantic_logits(q, gamma)                     # [2 / sqrt(2), 0] = [sqrt(2), 0]
    assert torch.allclose(logits, torch.tensor([[[math.sqrt(2.0), 0.0]]]))
    theta, attention = seat(q, gamma)
    a = math.exp(math.sqrt(2.0)) / (math.exp(math.sqrt(2.0)) + 1)              # 0.80441
    assert torch.allclose(attention, torch.tensor([[[a, 1 - a]]]), atol=1e-6)
    assert torch.allclose(theta, torch.tensor([[[a, 1 - a]]]), atol=1e-6)    # attention @ I
    assert segment_from_logits(logits).tolist() == [[0]]


def test_batchwise_tokens_is_the_batch_mean():
    tokens = torch.stack([torch.zeros(3, 2), torch.full((3, 2), 4.0)])
    assert torch.equal(batchwise_tokens(tokens), torch.full((3, 2), 2.0))
    with pytest.raises(ValueError, match=r"\(B, K, P\)"):
        batchwise_tokens(torch.zeros(3, 2))


# ----------------------------------------------------------------------------------------------------------
# Losses, Eq. (5)-(9)
# ----------------------------------------------------------------------------------------------------------

def test_reconstruction_and_consistency_losses_by_hand():
    image = torch.ones(1, 3, 2, 2)
    assert reconstruction_loss(torch.zeros_like(image), image).item() == pytest.approx(1.0)
    assert consistency_loss("image", theta_reconstruction=torch.full_like(image, 3.0),
                            image=image).item() == pytest.approx(4.0)
    q = torch.zeros(1, 4, 2)
    assert consistency_loss("embedding", theta=q + 2, q=q).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="image"):
        consistency_loss("pixels", theta=q, q=q)


def test_orthogonality_losses_by_hand():
    orthonormal = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert orthogonality_loss(orthonormal).item() == pytest.approx(0.0)
    # S S^T - I = diag(3, 0): mean of squares over the 2 x 2 entries = 9 / 4
    assert orthogonality_loss(torch.tensor([[2.0, 0.0], [0.0, 1.0]])).item() == pytest.approx(2.25)
    # cosine form: rows at 45 degrees -> cos^2 = 1/2 on each of the 2 off-diagonal entries, mean 1/2
    assert orthogonality_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), "cosine").item() == pytest.approx(0.5)
    # orthogonal rows of any norm: no cosine loss, but the Frobenius form also asks for unit norms
    scaled = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    assert orthogonality_loss(scaled, "cosine").item() == pytest.approx(0.0)
    assert orthogonality_loss(scaled).item() == pytest.approx((64 + 0.5625) / 4)
    batch = torch.stack([orthonormal[:, :2], torch.tensor([[2.0, 0.0], [0.0, 1.0]])])
    assert orthogonality_loss(batch).item() == pytest.approx(2.25 / 2)          # mean over the batch
    assert orthogonality_loss(scaled, "none").item() == 0.0


# ----------------------------------------------------------------------------------------------------------
# Collapse diagnostics and the pixel baselines
# ----------------------------------------------------------------------------------------------------------

def test_collapse_diagnostics_by_hand():
    m = cluster_marginal([torch.tensor([[0, 0], [1, 1]]), torch.tensor([0, 1, 0, 1])], 3)
    assert m.tolist() == [0.5, 0.5, 0.0]
    assert clusters_holding(m) == 2 and clusters_holding(torch.tensor([0.985, 0.01, 0.005])) == 1
    assert marginal_entropy(m) == pytest.approx(math.log(2))
    assert marginal_entropy(torch.full((4,), 0.25)) == pytest.approx(math.log(4))
    assert effective_rank(torch.eye(3)) == pytest.approx(3.0)
    assert effective_rank(torch.ones(5, 4) * torch.arange(1.0, 6.0)[:, None]) == pytest.approx(1.0)
    # singular values (3, 1): p = (3/4, 1/4), exp(H) = exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.75476
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(1.754765, abs=1e-5)
    d = collapse_diagnostics(torch.zeros(10, dtype=torch.long), 3, torch.eye(3))
    assert d == {"clusters_over_1pct": 1, "entropy": 0.0, "entropy_max": pytest.approx(math.log(3)),
                 "largest_cluster": 1.0, "effective_rank": pytest.approx(3.0), "embedding_dim": 3}
    with pytest.raises(ValueError, match="0..2"):
        cluster_marginal(torch.tensor([3]), 3)


def test_rgb_kmeans_separates_two_pure_colours():
    a = torch.zeros(3, 4, 6)
    a[0, :, :3] = 1.0                                   # red left half, blue right half
    a[2, :, 3:] = 1.0
    b = torch.zeros(3, 4, 6)
    b[2] = 1.0                                          # all blue, another size class of image
    la, lb = pixel_kmeans([a, b[:, :, :5]], 2, seed=0, sample=64)
    assert la.shape == (4, 6) and lb.shape == (4, 5)
    assert (la[:, :3] == la[0, 0]).all() and (la[:, 3:] == la[0, 3]).all() and la[0, 0] != la[0, 3]
    assert (lb == la[0, 3]).all()                       # blue is blue in both images
    doubled = pixel_kmeans([a], 2, lambda x: torch.cat([x, x]), seed=0, sample=64)[0]
    assert doubled[0, 0] != doubled[0, 3]               # a feature function (B, D, H, W) is used as given


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------

def test_training_step_terms_and_the_no_reconstruction_form():
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = SAN(SANConfig(**TINY))
    out = model.training_step({"image": images})
    assert {"loss", "reconstruction", "consistency", "orthogonality", "clusters_used"} <= set(out)
    assert out["loss"].item() == pytest.approx(
        (out["reconstruction"] + out["consistency"] + out["orthogonality"]).item(), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert int(model.memory_updates) == 1
    off = SAN(SANConfig(**TINY, reconstruction=False))
    terms = off.training_step({"image": images})
    assert "reconstruction" not in terms
    q, tokens = off.embed(images)                       # Eq. (7): the consistency is ||Theta - Q||^2
    gamma, _ = off.matched(tokens, off.semantics(tokens))
    qf = q.flatten(2).transpose(1, 2)
    assert terms["consistency"].item() == pytest.approx(((seat(qf, gamma)[0] - qf) ** 2).mean().item(), rel=1e-5)


def test_predictions_depend_on_the_batch_only_with_batch_semantics():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 24, 20)
    model = SAN(SANConfig(**TINY))
    model.training_step({"image": images})              # fills the memory of zeta
    model.eval()
    alone, together = model.scores(images[:1], "batch"), model.scores(images, "batch")[:1]
    assert alone.shape == (1, 3, 24, 20) and not torch.allclose(alone, together)
    assert torch.allclose(model.scores(images[:1], "memory"), model.scores(images, "memory")[:1], atol=1e-5)
    per_image = SAN(SANConfig(**TINY, semantics="image")).eval()
    assert torch.allclose(per_image.scores(images[:1], "batch"), per_image.scores(images, "batch")[:1], atol=1e-5)
    labels = model.predict(images)
    assert labels.shape == (4, 24, 20) and labels.dtype == torch.int64 and labels.max() < 3


def test_from_scratch_facts_and_clear_errors():
    model = SAN(SANConfig(**TINY)).eval()
    prov = model.provenance()
    assert prov["method"] == "san" and "no pretrained model" in prov["backbone"] and prov["weights_sha256"] is None
    assert prov["random_init"] is False and model.frozen_prefixes == ()
    with pytest.raises(NbsegError, match="eval_semantics='batch'"):
        model.predict(torch.rand(1, 3, 16, 16), "memory")           # never trained: no memory of zeta
    with pytest.raises(NbsegError, match="no frozen backbone"):
        model.scores_from_features(torch.zeros(1, 2, 2, 8))
    with pytest.raises(ConfigError, match="token_matcher: 'softmax' is not one of"):
        SANConfig(token_matcher="softmax").validate()
    with pytest.raises(ConfigError, match="not divisible by vit_heads"):
        SANConfig(embed_dim=30, vit_heads=4).validate()


def test_views_are_seeded_crops():
    cfg = SANConfig(crop_size=32, prescale=0.5, colour_jitter=0.1)
    image = torch.rand(3, 100, 80)
    a = random_view(image, cfg, torch.Generator().manual_seed(3))
    assert a.shape == (3, 32, 32) and torch.equal(a, random_view(image, cfg, torch.Generator().manual_seed(3)))
    assert 0 <= a.min() and a.max() <= 1
    real = SANConfig(data="potsdam", crop_size=32, prescale=0.5)
    view, label = eval_view(image, torch.arange(8000).reshape(100, 80) % 6, real)
    assert view.shape == (3, 32, 32) and label.shape == (32, 32)                # prescale to 50 x 40, centre crop


# ----------------------------------------------------------------------------------------------------------
# The claim's rule
# ----------------------------------------------------------------------------------------------------------

def _run(variant, seed, acc, largest, clusters, **extra):
    return {"variant": variant, "seed": seed, "san/batch/coarse/pixel_acc": acc, "san/batch/largest_cluster": largest,
            "san/batch/clusters_over_1pct": clusters, **extra}


def test_verdict_and_summary():
    rows = [_run("full", 0, 0.6, 0.5, 3, **{"rgb_kmeans/coarse/pixel_acc": 0.4,
                                             "random_cnn_kmeans/coarse/pixel_acc": 0.45}),
            _run("full", 1, 0.5, 0.5, 3), _run("no_reconstruction", 0, 0.4, 0.95, 2),
            _run("no_reconstruction", 1, 0.4, 0.6, 1)]
    runs = pd.DataFrame(rows)
    runs["collapsed"] = [collapsed(r) for r in rows]
    assert runs["collapsed"].tolist() == [False, False, True, True]
    v = verdict(runs)
    assert v["supported"] and v["no_reconstruction_collapsed_seeds"] == 2 and v["full_beats_rgb_kmeans"]
    runs.loc[3, "collapsed"] = False                    # one seed without reconstruction did not collapse
    assert not verdict(runs)["supported"]
    s = summarise(runs).set_index("variant")
    assert s.loc["full", "san/batch/coarse/pixel_acc mean"] == pytest.approx(0.55)
    assert s.loc["full", "san/batch/coarse/pixel_acc std"] == pytest.approx(0.05)
    assert s.loc["rgb_kmeans", "san/batch/coarse/pixel_acc mean"] == pytest.approx(0.4)


# ----------------------------------------------------------------------------------------------------------
# Resume after a kill, and the generic commands
# ----------------------------------------------------------------------------------------------------------

def _scores(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k.startswith("san/")}


def test_a_run_killed_mid_training_resumes_to_the_same_final_metrics(tmp_path):
    args = [*TINY_CLI, "checkpoint_every=2", "--eval-limit", "6", "--no-kmeans", "--no-progress"]
    assert nbseg_main(["train", "san", str(tmp_path / "straight"), *args]) == 0
    killed = tmp_path / "killed"
    # the same intra-op thread count as this process: float sums split over another number of threads differ in
    # the last bits, and the comparison below is exact
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "nbseg", "train", "san", str(killed), *args, "--no-eval"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step = 0
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            ckpt = killed / "checkpoint.pt"
            if ckpt.is_file():
                try:
                    step = int(load_checkpoint(ckpt)["step"])
                except Exception:                       # being renamed into place: read it again
                    step = 0
                if step >= 2:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    total = int(load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["step"])
    assert 2 <= step < total, "the run was not killed mid-training"
    assert nbseg_main(["train", "san", str(killed), *args]) == 0
    assert int(load_checkpoint(killed / "checkpoint.pt")["step"]) == total
    assert _scores(killed) == _scores(tmp_path / "straight") and _scores(killed)
    a = load_checkpoint(killed / "checkpoint.pt")["trainable"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["trainable"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)     # incl. BN stats, zeta memory


def test_san_trains_evaluates_segments_and_ablates_through_the_registry(tmp_path, capsys):
    assert "san" in get_method("san").name and get_method("san").kind == "SAN"
    run = tmp_path / "run"
    assert nbseg_main(["train", "san", str(run), *TINY_CLI, "--eval-limit", "6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "SAN trained from scratch, no pretrained model" in out and "raw-RGB k-means" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["model"] == "SAN trained from scratch, no pretrained model" and m["n_images"] == 6
    for key in ("san/batch/coarse/pixel_acc", "san/memory/full/miou", "rgb_kmeans/coarse/pixel_acc",
                "random_cnn_kmeans/full/pixel_acc"):
        assert 0 <= m[key] <= 1, key
    assert 1 <= m["san/batch/clusters_over_1pct"] <= 3 and m["san/batch/effective_rank"] >= 1
    assert nbseg_main(["evaluate", str(run), "--limit", "4", "--no-kmeans", "--json", str(tmp_path / "ev.json"),
                       "--figures", str(tmp_path / "figs"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["n_images"] == 4
    assert (tmp_path / "figs" / "san_segmentations.png").stat().st_size > 5_000
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    assert nbseg_main(["segment", "--checkpoint", str(run), str(image), "--out", str(tmp_path / "seg"),
                       "--no-progress"]) == 0
    with Image.open(tmp_path / "seg" / "img.png") as label:
        assert label.size == (56, 40) and np.asarray(label).max() < 3
    capsys.readouterr()
    code = nbseg_main(["ablate", "san", str(tmp_path / "abl"), "embed_dim=8", "vit_depth=1", "vit_heads=2",
                       "limit=8", "max_steps=2", "--eval-limit", "4", "--no-progress"])
    assert code == 0, capsys.readouterr()
    table = pd.read_csv(tmp_path / "abl" / "ablations.csv")
    assert table["ablation"].tolist() == ["full", "no_reconstruction"] and (table["status"] == "ok").all()
    assert table["reconstruction"].tolist() == [True, False]
    assert table["paper acc % (COCO-Stuff-3, as reported)"].tolist() == [80.3, 34.2]
    assert table["acc % (coarse, batch zeta)"].between(0, 100).all()


def test_shipped_configs_load():
    spec = get_method("san")
    for name, n in (("world", 3), ("potsdam", 6), ("potsdam3", 3), ("cocostuff27", 27)):
        cfg = load_method_config(spec, name)
        assert cfg.n_prototypes == n and (cfg.embed_dim == 1024) == (name != "world")
    assert load_method_config(spec, "cocostuff27").input_mode == "sobel"
