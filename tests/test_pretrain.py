"""DINO pieces against hand-derived values, and the run's exact resume, export and multi-process equivalence."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nbseg.config import load_config
from nbseg.pretrain import dino
from nbseg.pretrain.train import PretrainConfig, epoch_batches, export_teacher, pretrain


def test_dino_loss_by_hand():
    K = 3
    # uniform student: the cross-entropy is log K whatever the teacher says
    s = torch.zeros(4 * 2, K)
    t = torch.randn(2 * 2, K)
    t_p = dino.centered_teacher_probs(t, torch.zeros(1, K), 0.04)
    assert dino.dino_loss(s, t_p, 2, 0.1).item() == pytest.approx(math.log(K), rel=1e-6)
    # a confident teacher and a student that agrees only on the other global view
    t = torch.tensor([[10.0, 0, 0], [10.0, 0, 0]])          # 1 image, 2 global views, both say class 0
    s = torch.tensor([[0.0, 0, 0], [math.log(4), 0, 0], [0.0, 0, 0]])  # views: g1, g2, local (B=1, V=3)
    p = torch.tensor([4 / 6, 1 / 6, 1 / 6])
    # pairs: (t0,s1), (t0,s2), (t1,s0), (t1,s2) with student_temp 1, teacher_temp tiny -> one-hot teacher
    expected = (-math.log(p[0]) - math.log(1 / 3) - math.log(1 / 3) - math.log(1 / 3)) / 4
    got = dino.dino_loss(s, dino.centered_teacher_probs(t, torch.zeros(1, 3), 1e-3), 2, 1.0).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_center_and_ema():
    c = dino.updated_center(torch.zeros(1, 2), torch.tensor([[1.0, 3.0], [3.0, 5.0]]), 0.9)
    assert torch.allclose(c, torch.tensor([[0.2, 0.4]]))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.clone()
    dino.ema_update_(a, b, 0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_schedules():
    s = dino.cosine_schedule(1.0, 0.0, epochs=4, iters_per_epoch=5, warmup_epochs=1, start_warmup_value=0.0)
    assert len(s) == 20 and s[0] == 0.0 and s[5] == pytest.approx(1.0) and s[-1] == pytest.approx(0.0, abs=0.03)
    assert np.all(np.diff(s[5:]) <= 1e-12)                  # monotone decay after warm-up
    t = dino.teacher_temperature_schedule(0.04, 0.07, warmup_epochs=3, epochs=5)
    assert t.tolist() == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07])


def test_clip_gradients_per_parameter():
    m = torch.nn.Linear(2, 1)
    m.weight.grad = torch.tensor([[3.0, 4.0]])
    m.bias.grad = torch.tensor([0.5])
    norms = dino.clip_gradients_(m, 1.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5])
    assert m.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-4) and m.bias.grad.item() == 0.5


def test_head_normalises_and_fixes_last_layer_norm():
    head = dino.DINOHead(8, 16, hidden_dim=12, bottleneck_dim=4)
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 16)
    assert out.abs().max() <= 1.0 + 1e-5                     # unit bottleneck vector . unit weight rows
    assert not head.last_g.requires_grad and head.last_layer_parameters() == [head.last_v]


def test_multicrop_is_a_function_of_the_generator_seed():
    aug = dino.MultiCropAugmentation(dino.MultiCropConfig(global_size=32, local_size=16, n_local=3))
    img = torch.rand(3, 48, 48)
    v1 = aug(img, torch.Generator().manual_seed(5))
    v2 = aug(img, torch.Generator().manual_seed(5))
    v3 = aug(img, torch.Generator().manual_seed(6))
    assert [v.shape[-1] for v in v1] == [32, 32, 16, 16, 16]
    assert all(torch.equal(a, b) for a, b in zip(v1, v2))
    assert not torch.equal(v1[0], v3[0])
    assert all(v.min() >= 0 and v.max() <= 1 for v in v1)


def test_epoch_batches_are_a_seeded_permutation():
    b0 = epoch_batches(10, 4, seed=0, epoch=0)
    assert len(b0) == 2 and len(set(sum(b0, []))) == 8
    assert b0 == epoch_batches(10, 4, seed=0, epoch=0) != epoch_batches(10, 4, seed=0, epoch=1)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from nbseg.world import WorldSpec, write_world

    return write_world(tmp_path_factory.mktemp("w") / "world", WorldSpec(size=32, n_train=8, n_val=2),
                       workers=1, progress=False)


def tiny_cfg(root, **kw):
    base = dict(data="world", data_root=str(root), image_size=32, global_size=16, local_size=8, n_local=2,
                batch_size=4, epochs=2, warmup_epochs=1, out_dim=32, head_hidden_dim=16, bottleneck_dim=8,
                checkpoint_every=1, log_every=1, drop_path_rate=0.1)
    base.update(kw)
    return load_config(PretrainConfig, overrides={k: v for k, v in base.items()})


def test_resumed_run_equals_uninterrupted_run(tiny_world, tmp_path):
    full = pretrain(tiny_cfg(tiny_world), tmp_path / "full", progress=False)
    assert full["finished"] and full["steps"] == 4
    stopped = pretrain(tiny_cfg(tiny_world, max_steps=3), tmp_path / "resumed", progress=False)
    assert stopped["steps"] == 3 and not stopped["finished"]
    resumed = pretrain(tiny_cfg(tiny_world), tmp_path / "resumed", progress=False)
    assert resumed["steps"] == 4
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=False)
    for key in a["teacher"]:
        assert torch.equal(a["teacher"][key], b["teacher"][key]), key
    assert torch.equal(a["center"], b["center"])
    log = (tmp_path / "resumed/log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == [1, 2, 3, 4]   # no duplicated steps after resume
    assert (tmp_path / "full/loss_curve.png").stat().st_size > 0


def test_resume_with_other_settings_is_refused(tiny_world, tmp_path):
    from nbseg.errors import ConfigError

    pretrain(tiny_cfg(tiny_world, max_steps=1), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="another config"):
        pretrain(tiny_cfg(tiny_world, seed=1), tmp_path / "r", progress=False)


def test_export_loads_as_backbone(tiny_world, tmp_path):
    from nbseg.backbones import VIT_TINY, load

    pretrain(tiny_cfg(tiny_world, max_steps=2), tmp_path / "r", progress=False)
    out = export_teacher(tmp_path / "r", tmp_path / "teacher.pt", fp16=True)
    bb = load(VIT_TINY, weights=out)
    ckpt = torch.load(tmp_path / "r/checkpoint.pt", weights_only=False)
    w = ckpt["teacher"]["backbone.blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(bb.model.blocks[0].attn.qkv.weight, w.half().float())
    assert bb.extract(torch.rand(1, 3, 32, 32)).patches.shape == (1, 4, 4, 192)


def test_cli_pretrain_and_export(tiny_world, tmp_path):
    from nbseg.cli import main

    args = ["data=world", f"data_root={tiny_world}", "image_size=32", "global_size=16", "local_size=8", "n_local=2",
            "batch_size=4", "epochs=1", "out_dim=32", "head_hidden_dim=16", "bottleneck_dim=8"]
    assert main(["pretrain", str(tmp_path / "run"), *args, "--no-progress"]) == 0
    assert main(["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "w.pt")]) == 0
    assert (tmp_path / "w.pt").exists()
    assert main(["pretrain", str(tmp_path / "run2"), "bogus_key=1"]) == 2


def test_two_process_ddp_equals_single_process(tiny_world, tmp_path):
    """torchrun with 2 CPU processes (gloo) and half a batch each gives the single-process result."""
    common = [f"data_root={tiny_world}", "data=world", "image_size=32", "global_size=16", "local_size=8", "n_local=2",
              "batch_size=4", "epochs=1", "out_dim=32", "head_hidden_dim=16", "bottleneck_dim=8",
              "drop_path_rate=0", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    "29517", "-m", "nbseg", "pretrain", str(tmp_path / "ddp"), *common, "--no-progress"],
                   check=True, env=env, timeout=300, capture_output=True)
    pretrain(load_config(PretrainConfig, overrides=common), tmp_path / "single", progress=False)
    a = torch.load(tmp_path / "ddp/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "single/checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 2
    for key in a["teacher"]:
        torch.testing.assert_close(a["teacher"][key], b["teacher"][key], atol=2e-5, rtol=1e-4)


def test_init_weights_start_both_backbones_from_a_file(tiny_world, tmp_path):
    """``init_weights`` (continuing DINO from existing weights, e.g. ImageNet DINO adapted to a new domain) loads the
    file into student and teacher backbones; the head starts fresh; the file's sha256 is recorded."""
    import json

    from nbseg.io import sha256_file
    from nbseg.pretrain.train import build_networks

    pretrain(tiny_cfg(tiny_world, max_steps=1, seed=3), tmp_path / "a", progress=False)
    weights = export_teacher(tmp_path / "a", tmp_path / "a.pt")
    cfg = tiny_cfg(tiny_world, init_weights=str(weights))
    student, teacher = build_networks(cfg)
    ref = torch.load(weights, weights_only=False)["state_dict"]
    for key in ("blocks.0.attn.qkv.weight", "pos_embed", "norm.weight"):
        torch.testing.assert_close(student.backbone.state_dict()[key], ref[key])
        torch.testing.assert_close(teacher.backbone.state_dict()[key], ref[key])
    fresh, _ = build_networks(tiny_cfg(tiny_world))
    assert not torch.equal(fresh.backbone.state_dict()["blocks.0.attn.qkv.weight"], ref["blocks.0.attn.qkv.weight"])
    pretrain(tiny_cfg(tiny_world, init_weights=str(weights), max_steps=1), tmp_path / "b", progress=False)
    prov = json.loads((tmp_path / "b/provenance.json").read_text())
    assert prov["init_weights_sha256"] == sha256_file(weights)


def test_hue_and_grayscale_strength_reach_the_augmentation():
    img = torch.zeros(3, 32, 32)
    img[0] = 1.0                                                  # pure red
    strong = dino.MultiCropAugmentation(dino.MultiCropConfig(global_size=16, local_size=8, n_local=0, hue=0.5,
                                                             grayscale_p=0.0, colour_jitter=0.0))
    hues = set()
    for seed in range(12):
        v = strong(img, torch.Generator().manual_seed(seed))[0].mean((1, 2))
        hues.add(int(v.argmax()))
    assert len(hues) >= 2                                         # red turned into other dominant channels
    grey = dino.MultiCropAugmentation(dino.MultiCropConfig(global_size=16, local_size=8, n_local=0,
                                                           grayscale_p=1.0))
    v = grey(img, torch.Generator().manual_seed(0))[0]
    assert torch.allclose(v[0], v[1]) and torch.allclose(v[1], v[2])
