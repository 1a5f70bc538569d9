"""Stage 4 of the embedded backbone (nbseg.pretrain.tag_teacher): the teacher's labels, their class-balanced
selection, the crop geometry, the attention target, the EMA, and a tiny run that resumes exactly."""
import math

import pytest
import torch

from nbseg.pretrain.tag_teacher import (class_balanced_keep, crop_tags, smoothed_thing_target,
                                        standardise_per_class, tagged_labels)

from tests.test_caption_tags import _args, caption_world  # noqa: F401  (the tiny world without pixel labels)


def test_standardise_per_class_compares_a_class_with_itself_over_the_image():
    scores = torch.tensor([[[[5.0, 5.0], [5.0, 5.0]],            # class 0: constant -> 0 everywhere
                            [[0.0, 2.0], [0.0, 2.0]]]])         # class 1: mean 1, unbiased std 2/sqrt(3)
    z = standardise_per_class(scores)
    assert torch.equal(z[0, 0], torch.zeros(2, 2))
    s = 2 / math.sqrt(3)
    assert torch.allclose(z[0, 1], torch.tensor([[-1 / s, 1 / s], [-1 / s, 1 / s]]))


def test_standardised_labels_find_a_small_thing_the_raw_arg_max_misses():
    """The stage-3 failure in miniature: a broad stuff class scores higher than the thing everywhere in raw
    logits, but the thing's score stands out on its own patch; an untagged class never wins."""
    raw = torch.zeros(1, 3, 2, 2)
    raw[0, 0] = torch.tensor([[-3.0, -6.0], [-6.0, -6.0]])     # thing: highest on patch (0, 0)
    raw[0, 1] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])         # stuff: higher than the thing everywhere
    raw[0, 2] = 9.0 + torch.arange(4.0).view(2, 2)             # untagged class with the largest scores
    tags = torch.tensor([[1.0, 1.0, 0.0]])
    assert (raw[0, :2].argmax(0) == 1).all()
    labels, confidence = tagged_labels(standardise_per_class(raw), tags)
    assert labels.tolist() == [[[0, 1], [1, 1]]]
    assert ((confidence > 0.5) & (confidence <= 1)).all()
    none, conf = tagged_labels(raw, torch.zeros(1, 3))
    assert (none == -1).all() and (conf == 0).all()


def test_class_balanced_keep_keeps_the_same_share_of_every_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, -1])
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 1.0])
    assert class_balanced_keep(labels, confidence, 0.5).tolist() == [True, True, False, False, True, False, False]
    assert class_balanced_keep(labels, confidence, 1.0).tolist() == [True] * 6 + [False]


def test_crop_tags_drop_a_tag_the_crop_cut_out():
    labels = torch.tensor([[[2, 2], [3, -1]], [[-1, -1], [-1, -1]]])
    tags = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    assert crop_tags(labels, tags).tolist() == [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]


def test_smoothed_thing_target_puts_one_minus_eps_on_the_things_spread_over_them():
    share = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    t = smoothed_thing_target(share, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.allclose(t[0], torch.tensor([0.45, 0.45, 0.05, 0.05]))
    assert torch.allclose(t[1], torch.full((4,), 0.25))


def _net_and_batch(root, n=2, **kw):
    from nbseg.config import load_config
    from nbseg.pretrain.caption_tags import CaptionTagConfig, build
    from nbseg.pretrain.tag_teacher import collate_views

    cfg = load_config(CaptionTagConfig, overrides=dict(data_root=str(root), image_size=32, teacher_momentum=0.9,
                                                       drop_path_rate=0.0, **kw))
    net, data = build(cfg)
    return net, data, collate_views([data[(i, 7)] for i in range(n)])


def test_teacher_targets_are_cropped_before_labelling_and_mirror_with_the_flip(caption_world):
    """The teacher's standardised scores are RoI-aligned to the crop and labelled there (not labelled and then
    resampled), its thing share comes with them, and a flipped crop gets them mirrored."""
    from nbseg.data.crops import crop_maps

    net, _, (whole, _, _, _, tags) = _net_and_batch(caption_world)
    net.keep_fraction = 1.0
    grid = whole.shape[-1] // 8
    box = torch.tensor([[4.0, 0.0, 28.0, 24.0]] * len(whole))
    z = crop_maps(standardise_per_class(net.teacher_scores(whole)), box, grid, whole.shape[-1])
    expected, _ = tagged_labels(z, tags)
    plain = net.teacher_targets(whole, box, torch.tensor([False] * len(whole)), tags, grid)
    mirrored = net.teacher_targets(whole, box, torch.tensor([True] * len(whole)), tags, grid)
    assert torch.equal(plain["labels"].view_as(expected), expected)
    assert torch.equal(mirrored["labels"].view_as(expected), expected.flip(-1))
    assert torch.allclose(mirrored["thing_share"].view(-1, grid, grid), plain["thing_share"].view(-1, grid, grid)
                          .flip(-1))
    assert plain["thing_share"].min() >= 0 and plain["thing_share"].max() <= 1
    assert torch.equal(plain["tags"], crop_tags(expected, tags))


def test_teacher_starts_as_the_student_and_follows_it_by_ema(caption_world):
    net, _, batch = _net_and_batch(caption_world)
    for t, s in zip(net.teacher.parameters(), net._student_parts().parameters()):
        assert torch.equal(t, s)
    assert not any(p.requires_grad for p in net.teacher.parameters())
    before = net.teacher["patch_head"].weight.clone()
    out = net.training_step(batch, 0)
    out["loss"].backward()
    assert net.teacher["patch_head"].weight.grad is None and net.patch_head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.patch_head.weight.add_(1.0)
    net.after_step(0)
    assert torch.allclose(net.teacher["patch_head"].weight, 0.9 * before + 0.1 * net.patch_head.weight)


def test_stage4_run_resumes_exactly_and_exports_the_student(caption_world, tmp_path):
    from nbseg.backbones import read_weights_file
    from nbseg.cli import main

    args = _args(caption_world, teacher_momentum=0.9, self_training_weight=1.0)
    assert main(["pretrain-tags", str(tmp_path / "full"), *args, "--no-progress"]) == 0
    assert main(["pretrain-tags", str(tmp_path / "cut"), *args, "max_steps=2", "--no-progress"]) == 0
    assert main(["pretrain-tags", str(tmp_path / "cut"), *args, "--no-progress"]) == 0
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)["trainable"]
    b = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=False)["trainable"]
    assert any(k.startswith("teacher.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["teacher.patch_head.weight"], a["patch_head.weight"])
    out = tmp_path / "student.pt"
    assert main(["pretrain-tags", "export", str(tmp_path / "full"), str(out)]) == 0
    weights = read_weights_file(out)
    assert torch.equal(weights["pos_embed"], a["backbone.pos_embed"])
    log = (tmp_path / "full/log.csv").read_text()
    assert "teacher_ce" in log and "kept" in log
    # the next stage warm-starts from the run folder itself: the student's ViT and heads, never the EMA teacher's
    from nbseg.config import load_config
    from nbseg.pretrain.caption_tags import CaptionTagConfig, build
    nxt, _ = build(load_config(CaptionTagConfig, overrides=dict(
        data_root=str(caption_world), image_size=32, seed=5, init_weights=str(tmp_path / "full"))))
    state = nxt.state_dict()
    for k in ("backbone.pos_embed", "backbone.blocks.0.attn.qkv.weight", "patch_head.weight", "cls_head.1.weight"):
        assert torch.equal(state[k], a[k]), k


def test_stage4_refuses_the_attention_mil_term(caption_world):
    from nbseg.config import load_config
    from nbseg.errors import ConfigError
    from nbseg.pretrain.caption_tags import CaptionTagConfig

    with pytest.raises(ConfigError, match="mil_weight=0"):
        load_config(CaptionTagConfig, overrides=dict(data_root=str(caption_world), teacher_momentum=0.9,
                                                     mil_weight=1.0)).validate()


def test_within_image_separation_is_the_ce_over_the_images_own_class_centres():
    from nbseg.pretrain.tag_teacher import within_image_separation_loss

    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    tokens = torch.stack([torch.stack([e0, e0, e1, 3 * e1]),              # image 0: two classes, orthogonal
                          torch.stack([e0, e1, e0, e1])])                  # image 1: one labelled class only
    labels = torch.tensor([[0, 0, 5, 5], [2, 2, -1, -1]])
    loss = within_image_separation_loss(tokens, labels, 0.1)
    assert torch.allclose(loss, torch.log1p(torch.exp(torch.tensor(-10.0))), atol=1e-6)
    mixed = torch.stack([torch.stack([e0, e1, e0, e1])] * 2)             # both classes hold both directions:
    assert torch.allclose(within_image_separation_loss(mixed, labels, 0.1), torch.log(torch.tensor(2.0)))  # equal centres
    none = within_image_separation_loss(tokens.requires_grad_(), torch.full((2, 4), -1), 0.1)
    assert none.item() == 0 and none.requires_grad


def test_separation_needs_the_teacher(caption_world):
    from nbseg.config import load_config
    from nbseg.errors import ConfigError
    from nbseg.pretrain.caption_tags import CaptionTagConfig

    with pytest.raises(ConfigError, match="teacher_momentum"):
        load_config(CaptionTagConfig, overrides=dict(data_root=str(caption_world), separation_weight=1.0)).validate()
    net, _, batch = _net_and_batch(caption_world, separation_weight=1.0)
    out = net.training_step(batch, 0)
    assert "separation_ce" in out and out["separation_ce"] >= 0


def test_the_default_backbones_recipe_chains_its_six_stages(caption_world, tmp_path):
    """tools/train_embedded.sh, shrunk by EXTRA to two steps a stage on the tiny world: every stage trains,
    warm-starting from the run folder before it (the warm start itself: test_stage4_run_resumes_exactly...)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    env = dict(os.environ, NBSEG=f"{sys.executable} -m nbseg", CURVE="",
               EXTRA="image_size=32 batch_size=4 max_steps=2 log_every=1 checkpoint_every=1")
    cmd = ["sh", str(repo / "tools/train_embedded.sh"), str(runs), str(caption_world)]
    subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True)
    stages = sorted(p.name for p in runs.iterdir())
    assert stages == ["stage1_tags", "stage2_attention", "stage3_self_training", "stage4_teacher",
                      "stage5_separation", "stage6_separation"]
    configs = [yaml.safe_load((runs / s / "config.yaml").read_text()) for s in stages]
    assert configs[0]["init_weights"] is None and configs[0]["attention_weight"] == 0
    for before, cfg in zip(stages, configs[1:]):
        assert cfg["init_weights"] == str(runs / before)
    assert [c["teacher_momentum"] for c in configs] == [0, 0, 0, 0.99, 0.99, 0.99]
    assert [c["separation_weight"] for c in configs] == [0, 0, 0, 0, 1, 3]
    assert torch.load(runs / stages[-1] / "checkpoint.pt", weights_only=False)["step"] == 2
