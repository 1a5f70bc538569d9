"""TransFGU: the losses on hand-derived values, the Grad-CAM (the re-run last block is the backbone's, both gradient
paths agree), windows / fractions / roi_align crops, the decoder and the teacher refresh, and the stages and rounds
resuming to the same result after an interruption."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nbseg.methods.transfgu import losses as L
from nbseg.methods.transfgu.bank import crop_groups, purity_nmi, sliding_windows, window_fractions
from nbseg.methods.transfgu.data import crop_pseudo_labels, crop_scales
from nbseg.methods.transfgu.model import SegmenterDecoder, TransFGU, TransFGUConfig


# ----------------------------------------------------------------------------------------------------------
# Losses, Eq. (8)-(15), on values worked out by hand
# ----------------------------------------------------------------------------------------------------------

def test_minmax_normalise_is_per_image_over_classes_and_pixels():
    maps = torch.tensor([[[[1.0, 3.0]], [[2.0, 5.0]]], [[[0.0, 0.0]], [[0.0, 2.0]]]])       # (2, 2, 1, 2)
    out = L.minmax_normalise(maps)
    assert torch.allclose(out[0], torch.tensor([[[0.0, 0.5]], [[0.25, 1.0]]]))
    assert torch.allclose(out[1], torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]]))


def test_background_channel_is_relu_of_threshold_minus_max():
    maps = torch.tensor([[[[0.05, 0.5]], [[0.02, 0.3]]]])                                  # (1, 2, 1, 2)
    out = L.with_background(maps, 0.1)
    assert out.shape == (1, 3, 1, 2)
    assert torch.allclose(out[0, 0], torch.tensor([[0.05, 0.0]]))                         # 0.1 - 0.05; relu(-0.4)
    assert torch.equal(out[:, 1:], maps)


def test_bootstrap_target_averages_teacher_softmax_and_pseudo_label():
    p = torch.tensor([[[[1.0]], [[0.0]]]])
    assert torch.equal(L.bootstrap_target(p), p)
    t = L.bootstrap_target(p, torch.zeros(1, 2, 1, 1))                                     # softmax 0.5 / 0.5
    assert torch.allclose(t.flatten(), torch.tensor([0.75, 0.25]))


def test_peer_loss_subtracts_alpha_times_ce_of_permuted_labels():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)                          # p = (0.25, 0.75)
    target = torch.tensor([0.2, 0.9]).view(1, 2, 1, 1)                                     # argmax 1; permuted 0
    assert L.peer_loss(logits, target, 0.0) == pytest.approx(-math.log(0.75), abs=1e-6)
    value = L.peer_loss(logits, target, 0.1, torch.tensor([1, 0]))
    assert value == pytest.approx(-math.log(0.75) + 0.1 * math.log(0.25), abs=1e-6)


def test_uncertainty_loss_is_one_minus_top2_gap():
    logits = torch.log(torch.tensor([1.0, 2.0, 5.0])).view(1, 3, 1, 1)                    # p = (.125, .25, .625)
    assert L.uncertainty_loss(logits) == pytest.approx(1 - 0.375, abs=1e-6)
    assert L.uncertainty_loss(logits, channels=slice(1, None)) == pytest.approx(1 - (5 - 2) / 7, abs=1e-6)
    two = torch.cat([logits, torch.zeros(1, 3, 1, 1)], -1)                                  # second pixel: uniform
    assert L.uncertainty_loss(two, mask=torch.tensor([[[True, False]]])) == pytest.approx(0.625, abs=1e-6)
    assert L.uncertainty_loss(two) == pytest.approx(1 - 0.375 / 2, abs=1e-6)


def test_diversity_losses():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert L.diversity_loss_official(e) == pytest.approx(1.0)                              # orthogonal: 1 + 0
    assert L.diversity_loss_official(torch.tensor([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(0.0)
    assert L.diversity_loss_official(torch.tensor([[1.0, 1.0], [3.0, 3.0]])) == pytest.approx(2.0)
    # Eq. (15): 1 + (1/K^2) sum_ij C_i.C_j / sqrt(d) = 1 + 2 / (4 sqrt 2)
    assert L.diversity_loss_paper(e) == pytest.approx(1 + 2 / (4 * math.sqrt(2)))


def test_peer_alpha_schedules():
    assert [L.peer_alpha(e, 3, "official") for e in (0, 1, 7, 30)] == pytest.approx([0.03, 0.04, 0.10, 0.10])
    assert [L.peer_alpha(e, 3, "paper") for e in (0, 1, 2, 5)] == pytest.approx([0.03, 0.065, 0.10, 0.10])


# ----------------------------------------------------------------------------------------------------------
# Grad-CAM on the last block
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_vit():
    from nbseg.backbones import load

    return load("embedded", random_init=True)


def test_rerun_last_block_is_the_backbones(random_vit):
    from nbseg.methods.transfgu import gradcam as G

    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    feats = random_vit.extract(images)
    tokens = G.last_block_inputs(random_vit, images)
    attn = G.attention_probabilities(random_vit, tokens)
    out = G.last_block(random_vit, tokens, attn)
    assert torch.allclose(out[:, 0], feats.cls, atol=1e-5)
    assert torch.allclose(out[:, 1:].reshape(feats.patches.shape), feats.patches, atol=1e-5)
    assert torch.allclose(attn[:, :, 0, 1:].reshape(feats.attn.shape), feats.attn, atol=1e-6)
    # CLS depends on the attention only through its first row
    other = attn.clone()
    other[:, :, 1:] = other[:, :, 1:].flip(-1)
    assert torch.allclose(G.last_block(random_vit, tokens, other)[:, 0], feats.cls, atol=1e-5)
    assert torch.allclose(G.cls_from_attention_row(random_vit, tokens, attn[:, :, 0]), feats.cls, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_one_jacobian_equals_one_backward_per_concept(random_vit, variant):
    from nbseg.methods.transfgu import gradcam as G

    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 48, 48, generator=gen)
    concepts = torch.randn(5, random_vit.dim, generator=gen)
    tokens = G.last_block_inputs(random_vit, images)
    g_back, row = G.attention_gradients(random_vit, tokens, concepts, variant, "backward")
    g_jac, _ = G.attention_gradients(random_vit, tokens, concepts, variant, "jacobian")
    assert g_back.shape == (2, 5, random_vit.num_heads, 37) and g_back.abs().max() > 0
    assert torch.allclose(g_back, g_jac, atol=1e-5)
    maps = [G.pseudo_label_maps(random_vit, images, concepts, variant, m) for m in ("backward", "jacobian")]
    assert maps[0].shape == (2, 5, 6, 6) and torch.allclose(maps[0], maps[1], atol=1e-5)
    # different concepts give different maps
    assert (maps[0][:, 0] - maps[0][:, 1]).abs().max() > 0


def test_concept_maps_follow_the_released_rule():
    from nbseg.methods.transfgu.gradcam import concept_maps

    # one image, one concept, one head, CLS + 4 patches (2 x 2 grid)
    row = torch.tensor([[[0.2, 0.1, 0.2, 0.4, 0.1]]])
    grads = torch.tensor([[[[9.0, -0.6, 0.5, -0.3, -0.1]]]])                 # (1, 1, 1, 5); column 0 is CLS
    official = concept_maps(grads, row, (2, 2), "official", mass=0.8)[0, 0]
    # relu(-g) = (.6, 0, .3, .1): the top-80 % mass keeps .6 and .3 (0.9 / 1.0), drops .1
    assert torch.allclose(official, torch.tensor([[0.25 + 0.6, 0.0], [1.0 + 0.3, 0.25]]))
    paper = concept_maps(grads, row, (2, 2), "paper")[0, 0]
    assert torch.allclose(paper, torch.tensor([[0.1 + 0.6, 0.2], [0.4 + 0.3, 0.1 + 0.1]]))


# ----------------------------------------------------------------------------------------------------------
# Windows, crop groups, purity, roi_align crops
# ----------------------------------------------------------------------------------------------------------

def test_sliding_windows_half_stride_and_flush_edge():
    w = sliding_windows(10, 10, [0.5])
    assert w[:, 2].unique().tolist() == [5]
    assert sorted(set(w[:, 0].tolist())) == [0, 2, 4, 5]                     # stride 2, plus flush with the edge
    assert len(w) == 16 and (w[:, 0] + w[:, 2] <= 10).all()
    assert len(sliding_windows(96, 96, [0.6, 0.5, 0.4, 0.3])) == 79


def test_window_fractions_and_groups():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1
    windows = torch.tensor([[0, 0, 2], [0, 0, 4], [2, 2, 2]])
    assert window_fractions(mask, windows)[0].tolist() == pytest.approx([1.0, 0.25, 0.0])
    fg = np.array([[0.6, 0.5, 0.1, 0.3]])
    assert crop_groups(fg, 2, 3, 0.5, 0.8).tolist() == [[0, -1, 1, -1]]
    assert crop_groups(fg, 2, 0, 0.5, 0.8).tolist() == [[0, -1, -1, -1]]          # foreground only
    assert crop_groups(fg, 0, 3, 0.5, 0.8).tolist() == [[1, 1, 1, 1]]             # no split: every crop


def test_purity_and_nmi():
    perfect = purity_nmi(torch.tensor([0, 0, 1, 1, -1]), torch.tensor([3, 3, 5, 5, 5]))
    assert perfect == {"purity": 1.0, "nmi": pytest.approx(1.0), "n_crops": 4}
    mixed = purity_nmi(torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 2, 2]))
    assert mixed["purity"] == pytest.approx(0.75) and 0 < mixed["nmi"] < 1


def test_roi_align_crops_pseudo_labels():
    assert crop_scales(0.4, 0.9) == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    maps = torch.zeros(1, 2, 12, 12)
    maps[:, 0, :, :6] = 1.0                                                   # class 0 on the left half
    maps[:, 1] = 0.5
    left = crop_pseudo_labels(maps, torch.tensor([[0.0, 0.0, 24.0, 24.0]]), 2, 96)
    assert torch.allclose(left[0, 0], torch.ones(2, 2)) and torch.allclose(left[0, 1], torch.full((2, 2), 0.5))
    right = crop_pseudo_labels(maps, torch.tensor([[60.0, 30.0, 96.0, 66.0]]), 3, 96)
    assert torch.allclose(right[0, 0], torch.zeros(3, 3))


# ----------------------------------------------------------------------------------------------------------
# Decoder, training step, teacher refresh
# ----------------------------------------------------------------------------------------------------------

def test_decoder_shapes_and_mask_norm():
    torch.manual_seed(0)
    dec = SegmenterDecoder(16, 5, 12, n_layers=1, n_heads=2, dropout=0.0).eval()
    masks, classes = dec(torch.randn(3, 4, 4, 16))
    assert masks.shape == (3, 5, 4, 4) and classes.shape == (3, 5, 12)
    assert torch.allclose(classes.norm(dim=-1), torch.ones(3, 5), atol=1e-5)
    assert torch.allclose(masks.mean(1), torch.zeros(3, 4, 4), atol=1e-5)          # LayerNorm over K
    assert torch.allclose(dec.cls_emb @ dec.cls_emb.t(), torch.eye(5), atol=1e-5)   # orthogonal init
    paper = SegmenterDecoder(16, 5, 12, n_layers=1, n_heads=2, dropout=0.0, variant="paper").eval()
    assert paper(torch.randn(1, 2, 2, 16))[0].shape == (1, 5, 2, 2)


TINY = dict(random_init=True, image_size=48, crop_size=32, train_crop_size=32, crop_scales=[0.6, 0.5],
            decoder_layers=1, epochs=4, bootstrap_start=2, bootstrap_intervals=[1], batch_size=4, device="cpu",
            log_every=1, checkpoint_every=1000, chunk_size=4, kmeans_iters=10, labels="full")


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_training_step_and_teacher_refresh(random_vit, variant):
    cfg = TransFGUConfig(**{**TINY, "variant": variant})
    assert cfg.refresh_epochs() == [2, 3] and cfg.n_classes == 13
    model = TransFGU(cfg, backbone=random_vit)
    batch = {"image": torch.rand(4, 3, 32, 32), "pseudo": torch.rand(4, 13, 4, 4)}
    out = model.training_step(batch)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad and out["alpha"] == 0
    out["loss"].backward()
    opt = torch.optim.AdamW(model.student.parameters())
    opt.step()
    trained = {k: v.clone() for k, v in model.student.state_dict().items()}
    model.epoch_end(0, opt)                                                   # epoch 1 starts no round
    assert int(model.round) == 0 and int(model.epochs_since_refresh) == 1
    model.epoch_end(1, opt)                                                   # epoch 2 starts round 1
    assert int(model.round) == 1 and int(model.epochs_since_refresh) == 0
    assert all(torch.equal(model.teacher.state_dict()[k], v) for k, v in trained.items())
    fresh = TransFGU(cfg, backbone=random_vit).student.state_dict()
    assert all(torch.equal(model.student.state_dict()[k], v) for k, v in fresh.items())
    assert (len(opt.state) == 0) == (variant == "paper")                      # paper resets the optimiser
    out = model.training_step(batch)
    assert out["alpha"] == pytest.approx(0.03) and int(out["round"]) == 1


def test_voc_style_targets_get_a_background_channel(random_vit):
    cfg = TransFGUConfig(**{**TINY, "labels": "voc"})
    model = TransFGU(cfg, backbone=random_vit)
    assert (model.n_things, model.n_stuff, model.foreground_only, cfg.n_classes) == (8, 0, True, 9)
    t = model.targets(torch.rand(2, 8, 4, 4))
    assert t.shape == (2, 9, 4, 4) and (t[:, 0] <= 0.1).all()


def test_bad_config_is_a_clear_error():
    from nbseg.errors import ConfigError

    with pytest.raises(ConfigError, match="variant"):
        TransFGUConfig(variant="nope").validate()
    with pytest.raises(ConfigError, match="thing / stuff counts"):
        TransFGUConfig(data="folder").class_split()


def test_world_thing_stuff_counts_match_the_worlds_class_table():
    from nbseg.world import class_table

    table = class_table()
    flags = table["full"]["is_thing"]
    assert TransFGUConfig(labels="full").class_split() == (sum(flags), len(flags) - sum(flags), False)
    groups = table["coarse"]["full_to_coarse"]
    thing_groups = {g for g, thing in zip(groups, flags) if thing}
    n_groups = len(table["coarse"]["names"])
    assert TransFGUConfig(labels="coarse").class_split() == (len(thing_groups), n_groups - len(thing_groups), False)
    assert TransFGUConfig(labels="voc").class_split() == (len(table["voc"]["names"]) - 1, 0, True)


def test_table3_summary_and_verdict():
    import pandas as pd

    from nbseg.methods.transfgu.table3 import summarise, verdict

    rows = []
    for labels, n, base in (("coarse", 3, 0.5), ("full", 13, 0.2)):
        for seed, jitter in enumerate((-0.01, 0.01)):
            gain = 0.0 if labels == "coarse" else 0.1
            rows.append({"labels": labels, "n_classes": n, "seed": seed, "kmeans": base + jitter,
                         "initial": base + 0.01, "trained": base + 0.02 + gain / 2, "bootstrapped": base + 0.03 + gain,
                         "concept_purity": 0.5, "concept_nmi": 0.4})
    s = summarise(pd.DataFrame(rows))
    assert list(s["labels"]) == ["coarse", "full"] and s["kmeans_std"].tolist() == pytest.approx([0.01 * 2 ** 0.5] * 2)  # ddof 1
    assert s["gap_to_kmeans"].tolist() == pytest.approx([0.03, 0.13])
    assert verdict(s) == {"stages_ordered": True, "gap_grows": True, "supported": True, "why_not": []}
    s.loc[0, "trained_mean"] = 0.9
    v = verdict(s)
    assert not v["supported"] and not v["stages_ordered"] and v["gap_grows"] and "coarse" in v["why_not"][0]


# ----------------------------------------------------------------------------------------------------------
# augment: false (nbseg's sanity fit, issue #16) and whole-image crops
# ----------------------------------------------------------------------------------------------------------

class _StoredMaps:
    """The two members of the pseudo-label bank that PseudoLabelCrops reads."""

    def __init__(self, maps):
        self.maps = maps

    def tensor(self, index=slice(None)):
        return self.maps[index]


def test_whole_image_items_without_augmentation(tmp_path):
    from nbseg.methods.transfgu.bank import load_images
    from nbseg.methods.transfgu.data import PseudoLabelCrops, open_split
    from nbseg.world import WorldSpec, write_world

    root = write_world(tmp_path / "world", WorldSpec(size=32, n_train=2, n_val=1), workers=1, progress=False)
    maps = torch.rand(2, 3, 4, 4)
    full = load_images(open_split(TransFGUConfig(data_root=str(root))), 0, 2, 32)

    def items(**kw):
        cfg = TransFGUConfig(data_root=str(root), image_size=32, train_crop_size=32, **kw)
        cfg.validate()
        crops = PseudoLabelCrops(open_split(cfg), _StoredMaps(maps), cfg, 8)
        return [crops[(i, seed)] for i in range(2) for seed in range(8)]

    for it in items(augment=False):                              # the stored maps and the image, as they are
        assert torch.allclose(it["image"], full[it["index"]], atol=1e-5)
        assert torch.allclose(it["pseudo"], maps[it["index"]], atol=1e-5)
    flipped = 0
    for it in items(crop_scale_min=1.0, crop_scale_max=1.0):     # whole-image crops: roi_align'd maps, flips
        i, is_flipped = it["index"], not torch.allclose(it["image"], full[it["index"]], atol=1e-5)
        flipped += is_flipped
        whole = crop_pseudo_labels(maps[i:i + 1], torch.tensor([[0.0, 0.0, 32.0, 32.0]]), 4, 32)[0]
        expected = (full[i].flip(-1), whole.flip(-1)) if is_flipped else (full[i], whole)
        assert torch.allclose(it["image"], expected[0], atol=1e-5)
        assert torch.allclose(it["pseudo"], expected[1], atol=1e-5)
    assert 0 < flipped < 16
    cropped = items()                                            # released scales 0.4 .. 0.9: never the whole image
    assert not any(torch.allclose(it["image"], full[it["index"]], atol=1e-3) for it in cropped)


def test_no_photometric_draw_without_augmentation(random_vit, monkeypatch):
    from nbseg.methods.transfgu import model as M

    calls = []
    monkeypatch.setattr(M, "photometric", lambda images: calls.append(1) or images)
    batch = {"image": torch.rand(2, 3, 32, 32), "pseudo": torch.rand(2, 13, 4, 4)}
    TransFGU(TransFGUConfig(**{**TINY, "augment": False}), backbone=random_vit).training_step(batch)
    assert calls == []
    TransFGU(TransFGUConfig(**TINY), backbone=random_vit).training_step(batch)
    assert calls == [1]


def test_augmentation_options_are_checked():
    from nbseg.errors import ConfigError

    with pytest.raises(ConfigError, match="augment must be true or false"):
        TransFGUConfig(augment="no").validate()
    with pytest.raises(ConfigError, match="crop_scale_max <= 1"):
        TransFGUConfig(crop_scale_max=1.2).validate()
