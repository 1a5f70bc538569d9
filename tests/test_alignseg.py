"""AlignSeg: losses against values derived by hand, decoder shapes, multi-crop rule, training on a tiny model."""
import math

import pytest
import torch

from nbseg.data.base import SegSample
from nbseg.data.multicrop import (MultiCropDataset, MultiCropSpec, box_intersection_area, collate_multicrop,
                                  multicrop, sample_multicrop_boxes)
from nbseg.errors import ConfigError, DataError
from nbseg.methods.alignseg import AlignSeg, AlignSegConfig, AlignSegDecoder, prototype_similarity, segment
from nbseg.methods.alignseg.losses import (alignment_terms, alignseg_loss_terms, clamped_prototype_correlation,
                                           correlation_loss_official, correlation_loss_paper, dense_correlation,
                                           prototype_infonce_paper, prototype_ntxent_official, saliency_pair_mask,
                                           softmax_prototype_correlation, spatially_centred, token_prototype_cosine,
                                           total_loss)

R = 1 / math.sqrt(2)
SIG = math.e / (math.e + 1)          # softmax([1, 0])[0] = 0.731059


# ----------------------------------------------------------------------------------------------------------
# A 2-token global crop and a 2-token local crop in R^2, K = 2 prototypes = the axes
#   x_g = [e1, e2];  x_l = [e1, (1, 1)] (cosines with the axes: [1, 0] and [R, R]);  P^g = P^l = [e1, e2]
# ----------------------------------------------------------------------------------------------------------

def toy():
    x_g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])            # (B=1, n=2, D=2)
    x_l = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])          # (B=1, V=1, m=2, D=2)
    p_g = torch.eye(2)[None]                                  # (1, K=2, 2)
    p_l = torch.eye(2)[None, None]                            # (1, 1, 2, 2)
    return x_g, x_l, p_g, p_l


def test_cosine_and_dense_correlation_by_hand():
    x_g, x_l, p_g, p_l = toy()
    assert torch.allclose(token_prototype_cosine(x_g, p_g), torch.eye(2)[None])
    assert torch.allclose(token_prototype_cosine(x_l, p_l), torch.tensor([[[[1, 0], [R, R]]]]))
    # DenseCorr = cos(x_g, x_l): rows = global tokens e1, e2; cols = local tokens e1, (1,1)/sqrt2
    assert torch.allclose(dense_correlation(x_g, x_l), torch.tensor([[[[1, R], [0, R]]]]))


def test_prototype_infonce_paper_by_hand():
    _, _, p_g, p_l = toy()
    # row i: cos(P_i^g, P_j^l) = [1, 0] (i = j first) -> -log(e / (e + 1)) = log(1 + e^-1) = 0.313262;
    # Eq. (4) sums over the K = 2 rows: 0.626523
    assert prototype_infonce_paper(p_g, p_l, tau=1.0).item() == pytest.approx(2 * math.log(1 + math.exp(-1)), 1e-6)
    assert prototype_infonce_paper(p_g, p_l, tau=1.0).item() == pytest.approx(0.626523, abs=1e-6)
    # tau = 0.5 doubles the logits: 2 * log(1 + e^-2) = 0.253856
    assert prototype_infonce_paper(p_g, p_l, tau=0.5).item() == pytest.approx(0.253856, abs=1e-6)


def test_prototype_ntxent_official_by_hand():
    _, _, p_g, p_l = toy()
    # z = [e1, e2, e1, e2]; row 0: self masked, positive z2 (sim 1), negatives z1 (0), z3 (0):
    # -1 + log(e^1 + e^0 + e^0) = log(e + 2) - 1 = 0.551445; every row is alike
    assert prototype_ntxent_official(p_g, p_l).item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    # K = 1: no negatives, the only other entry is the positive -> loss 0
    one_g, one_l = torch.randn(3, 1, 4), torch.randn(3, 2, 1, 4)
    assert prototype_ntxent_official(one_g, one_l).item() == pytest.approx(0.0, abs=1e-6)


def test_prototype_losses_prefer_matching_order():
    p_g = torch.randn(2, 5, 8)
    aligned = p_g[:, None].repeat(1, 2, 1, 1)
    shuffled = aligned[:, :, torch.tensor([1, 2, 3, 4, 0])]
    for fn in (prototype_infonce_paper, prototype_ntxent_official):
        assert fn(p_g, aligned) < fn(p_g, shuffled)


def test_correlation_paper_by_hand():
    x_g, x_l, p_g, p_l = toy()
    x_l = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])          # local tokens e1, e2 -> DenseCorr = I
    s_g, s_l = token_prototype_cosine(x_g, p_g), token_prototype_cosine(x_l, p_l)
    # ProtoCorr = max(s_g,0) max(s_l,0)^T = I;  F - h = [[0.9, -0.1], [-0.1, 0.9]] (h = 0.1)
    # sum of -P (F - h) = -(0.9 + 0.9) = -1.8 over 4 pairs -> -0.45
    assert correlation_loss_paper(s_g, s_l, x_g, x_l, None, None, 0.1).item() == pytest.approx(-0.45, abs=1e-6)
    ones_g, ones_l = torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 1, 2, dtype=torch.bool)
    assert correlation_loss_paper(s_g, s_l, x_g, x_l, ones_g, ones_l, 0.1).item() == pytest.approx(-0.45, abs=1e-6)
    # mask: local token 1 background -> pairs (0,0) and (1,0): -(0.9 * 1 + (-0.1) * 0) / 2 = -0.45;
    # global token 1 background too -> only (0,0): -0.9 / 1
    m_l = torch.tensor([[[True, False]]])
    assert correlation_loss_paper(s_g, s_l, x_g, x_l, ones_g, m_l, 0.1).item() == pytest.approx(-0.45, abs=1e-6)
    m_g = torch.tensor([[True, False]])
    assert correlation_loss_paper(s_g, s_l, x_g, x_l, m_g, m_l, 0.1).item() == pytest.approx(-0.9, abs=1e-6)
    # 0-clamp: local prototype 0 flipped to -e1 -> s_l = [[-1, 0], [0, 1]] -> clamped [[0, 0], [0, 1]];
    # ProtoCorr = [[0, 0], [0, 1]] -> -(0.9) / 4 = -0.225 (without the clamp: -(-0.9 + 0.9) / 4 = 0)
    s_l_flipped = token_prototype_cosine(x_l, torch.tensor([[[[-1.0, 0.0], [0.0, 1.0]]]]))
    assert torch.allclose(clamped_prototype_correlation(s_g, s_l_flipped), torch.tensor([[[[0., 0.], [0., 1.]]]]))
    assert correlation_loss_paper(s_g, s_l_flipped, x_g, x_l, None, None, 0.1).item() == pytest.approx(-0.225, 1e-6)


def test_correlation_official_by_hand():
    x_g, x_l, p_g, p_l = toy()
    F_ = dense_correlation(x_g, x_l)                          # [[1, R], [0, R]]
    # row means (1 + R)/2 = 0.853553 and R/2 = 0.353553; scalar mean (1 + 2R)/4 = 0.603553
    # centred: [[1 - 0.853553 + 0.603553, R - 0.853553 + 0.603553], [0.25, R - 0.353553 + 0.603553]]
    #        = [[0.75, 0.457107], [0.25, 0.957107]]
    assert torch.allclose(spatially_centred(F_), torch.tensor([[[[0.75, 0.457107], [0.25, 0.957107]]]]), atol=1e-6)
    s_g, s_l = token_prototype_cosine(x_g, p_g), token_prototype_cosine(x_l, p_l)
    # softmax rows: global [SIG, 1-SIG], [1-SIG, SIG] (SIG = e/(e+1) = 0.731059); local [SIG, 1-SIG], [0.5, 0.5]
    # A = [[SIG^2 + (1-SIG)^2, 0.5], [2 SIG (1-SIG), 0.5]] = [[0.606776, 0.5], [0.393224, 0.5]]
    A = softmax_prototype_correlation(s_g, s_l)
    assert torch.allclose(A, torch.tensor([[[[SIG ** 2 + (1 - SIG) ** 2, 0.5], [2 * SIG * (1 - SIG), 0.5]]]]))
    # h = 0.1: sum A (F - h) = 0.606776*0.65 + 0.5*0.357107 + 0.393224*0.15 + 0.5*0.857107 = 1.060495
    # L = -0.15 * 1.060495 = -0.159074
    loss = correlation_loss_official(s_g, s_l, x_g, x_l, None, None, 0.1)
    assert loss.item() == pytest.approx(-0.159074, abs=1e-6)
    # fg AND fg mask keeping only global token 0: -0.15 * (0.394404 + 0.178554) = -0.15 * 0.572958 = -0.085944
    m_g, m_l = torch.tensor([[True, False]]), torch.ones(1, 1, 2, dtype=torch.bool)
    assert correlation_loss_official(s_g, s_l, x_g, x_l, m_g, m_l, 0.1).item() == pytest.approx(-0.085944, abs=1e-6)


def test_official_sums_and_paper_averages_over_the_batch():
    g = torch.Generator().manual_seed(0)
    x_g, x_l = torch.randn(2, 6, 8, generator=g), torch.randn(2, 3, 5, 8, generator=g)
    p_g, p_l = torch.randn(2, 4, 8, generator=g), torch.randn(2, 3, 4, 8, generator=g)
    m_g, m_l = torch.rand(2, 6, generator=g) > 0.3, torch.rand(2, 3, 5, generator=g) > 0.3
    twice = [torch.cat([t, t]) for t in (x_g, x_l, p_g, p_l, m_g, m_l)]
    for variant, ratio in (("official", 2.0), ("paper", 1.0)):
        one = alignseg_loss_terms(variant, x_g, x_l, p_g, p_l, m_g, m_l, h=0.1)
        two = alignseg_loss_terms(variant, *twice, h=0.1)
        assert two["loss_corr"].item() == pytest.approx(ratio * one["loss_corr"].item(), rel=1e-5)
        assert two["loss_proto"].item() == pytest.approx(one["loss_proto"].item(), rel=1e-5)
        assert one["loss"].item() == pytest.approx((one["loss_proto"] + one["loss_corr"]).item(), rel=1e-6)


def test_mask_blocks_background_pairs_and_their_gradient():
    g = torch.Generator().manual_seed(1)
    x_g, x_l = torch.randn(1, 4, 6, generator=g), torch.randn(1, 2, 4, 6, generator=g)
    m_g, m_l = torch.tensor([[True, True, False, False]]), torch.ones(1, 2, 4, dtype=torch.bool)
    assert saliency_pair_mask(m_g, m_l).shape == (1, 2, 4, 4)
    assert saliency_pair_mask(m_g, m_l)[0, :, 2:].sum() == 0
    s_l = token_prototype_cosine(x_l, torch.randn(1, 2, 3, 6, generator=g))
    for fn in (correlation_loss_paper, correlation_loss_official):
        s_g = token_prototype_cosine(x_g, torch.randn(1, 3, 6, generator=g)).requires_grad_(True)
        fn(s_g, s_l, x_g, x_l, m_g, m_l, 0.1).backward()
        assert s_g.grad[0, 2:].abs().sum() == 0 and s_g.grad[0, :2].abs().sum() > 0
        # background global tokens may change freely without changing the loss (the target is recomputed too)
        x_g2 = x_g.clone()
        x_g2[0, 2:] = torch.randn(2, 6, generator=g)
        s_g2 = s_g.detach().clone()
        s_g2[0, 2:] = 0.3
        if fn is correlation_loss_paper:     # the official target's scalar mean spans all pairs, fg or not
            assert fn(s_g2, s_l, x_g2, x_l, m_g, m_l, 0.1).item() == pytest.approx(
                fn(s_g.detach(), s_l, x_g, x_l, m_g, m_l, 0.1).item(), abs=1e-6)


def test_zero_clamp_kills_gradient_of_negative_cosines():
    s_g = torch.tensor([[[-0.5, 0.8]]], requires_grad=True)   # (B=1, n=1, K=2)
    s_l = torch.tensor([[[[0.6, 0.4]]]])                      # (1, 1, 1, 2)
    proto = clamped_prototype_correlation(s_g, s_l)
    assert proto.item() == pytest.approx(0.8 * 0.4)           # 0 * 0.6 + 0.8 * 0.4
    proto.sum().backward()
    assert s_g.grad[0, 0, 0] == 0 and s_g.grad[0, 0, 1] == pytest.approx(0.4)
    # official: a negative cosine is clamped to 0 before the softmax, so it counts like 0: softmax([0, 0.8])
    assert torch.allclose(softmax_prototype_correlation(torch.tensor([[[-0.5, 0.8]]]), s_l),
                          softmax_prototype_correlation(torch.tensor([[[0.0, 0.8]]]), s_l))


def test_alignment_is_minimal_when_correlated_tokens_share_a_prototype():
    # DenseCorr: pairs (0,0) and (1,1) similar (0.9 > h), the others dissimilar (0 < h)
    dense = torch.tensor([[[[0.9, 0.0], [0.0, 0.9]]]])
    same = clamped_prototype_correlation(torch.eye(2)[None], torch.eye(2)[None, None])       # I
    swapped = clamped_prototype_correlation(torch.eye(2)[None], torch.eye(2).flip(0)[None, None])
    merged = clamped_prototype_correlation(torch.tensor([[[1.0, 0], [1, 0]]]), torch.tensor([[[[1.0, 0], [1, 0]]]]))
    losses = [alignment_terms(p, dense, 0.2).sum().item() for p in (same, swapped, merged)]
    # same: -(0.7 + 0.7) = -1.4; swapped: -(-0.2 - 0.2) = 0.4; merged: -(0.7 + 0.7 - 0.2 - 0.2) = -1.0
    assert losses == pytest.approx([-1.4, 0.4, -1.0])
    assert total_loss(torch.tensor(2.0), torch.tensor(-1.0), alpha=0.5, beta=3.0).item() == pytest.approx(-2.0)


# ----------------------------------------------------------------------------------------------------------
# Decoder and inference
# ----------------------------------------------------------------------------------------------------------

def test_decoder_shapes_similarity_and_segment():
    dec = AlignSegDecoder(dim=12, n_prototypes=4, n_layers=2, n_heads=3)
    patches = torch.randn(2, 3, 5, 12)
    protos = dec(patches.flatten(1, 2))
    assert protos.shape == (2, 4, 12)
    sim = prototype_similarity(patches, protos)
    assert sim.shape == (2, 4, 3, 5) and sim.abs().max() <= 1 + 1e-5
    labels = segment(sim, (24, 40))
    assert labels.shape == (2, 24, 40) and labels.dtype == torch.long
    assert labels.min() >= 0 and labels.max() < 4
    # at the token grid's own size, segment is the plain argmax of Eq. (3)
    assert torch.equal(segment(sim, (3, 5)), sim.argmax(1))
    with pytest.raises(ValueError, match="divisible"):
        AlignSegDecoder(dim=10, n_heads=3)


def test_official_decoder_loop_restarts_each_layer():
    torch.manual_seed(0)
    dec = AlignSegDecoder(dim=6, n_prototypes=3, n_layers=2, n_heads=2, restart_from_prototypes=True)
    dec(torch.randn(2, 7, 6)).sum().backward()
    assert all(p.grad is None for p in dec.layers[0].parameters())   # only the last layer counts
    chained = AlignSegDecoder(dim=6, n_prototypes=3, n_layers=2, n_heads=2)
    chained(torch.randn(2, 7, 6)).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in chained.layers[0].parameters())


# ----------------------------------------------------------------------------------------------------------
# Multi-crop
# ----------------------------------------------------------------------------------------------------------

class _Images:
    """A stand-in dataset: three random 48x40 images."""

    def __init__(self):
        self.images = torch.rand(3, 3, 48, 40, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return SegSample(self.images[i], None, f"img{i}")


def test_minimum_intersection_rule_holds():
    spec = MultiCropSpec(n_local=3)
    for seed in range(200):
        gbox, lboxes, fallbacks = sample_multicrop_boxes(48, 40, spec, torch.Generator().manual_seed(seed))
        assert len(lboxes) == 3
        for box in [gbox, *lboxes]:
            t, l, h, w = box
            assert t >= 0 and l >= 0 and t + h <= 48 and l + w <= 40
        assert all(box_intersection_area(b, gbox) > 0.05 * 48 * 40 for b in lboxes)
    assert box_intersection_area((0, 0, 4, 4), (2, 2, 4, 4)) == 4
    assert box_intersection_area((0, 0, 4, 4), (4, 0, 4, 4)) == 0


def test_multicrop_is_a_function_of_the_seed():
    ds = MultiCropDataset(_Images(), MultiCropSpec(global_size=16, local_size=8, n_local=2))
    a, b, c = ds[(1, 7)], ds[(1, 7)], ds[(1, 8)]
    assert torch.equal(a.global_crop, b.global_crop) and torch.equal(a.local_crops, b.local_crops)
    assert torch.equal(a.local_boxes, b.local_boxes)
    assert not (torch.equal(a.global_box, c.global_box) and torch.equal(a.local_boxes, c.local_boxes))
    assert a.global_crop.shape == (3, 16, 16) and a.local_crops.shape == (2, 3, 8, 8)
    assert a.global_crop.min() >= 0 and a.global_crop.max() <= 1
    # the global crop is the image's box, resized: a full-image box at the image size is the image itself
    full = multicrop(torch.rand(3, 8, 8), MultiCropSpec(global_size=8, global_scale=(1.0, 1.0)), seed=0)
    assert full.global_box.tolist() == [0, 0, 8, 8]
    batch = collate_multicrop([ds[(i, i)] for i in range(3)])
    assert batch["global"].shape == (3, 3, 16, 16) and batch["local"].shape == (3, 2, 3, 8, 8)
    assert batch["local_boxes"].shape == (3, 2, 4) and batch["image_size"].tolist() == [[48, 40]] * 3
    assert batch["id"] == ["img0", "img1", "img2"]
    with pytest.raises(DataError, match=r"\(index, seed\)"):
        ds[1]


# ----------------------------------------------------------------------------------------------------------
# The method on a tiny random-init backbone
# ----------------------------------------------------------------------------------------------------------

def tiny_model(variant: str = "official", **kw) -> AlignSeg:
    settings = dict(backbone="embedded", random_init=True, variant=variant, n_prototypes=4, global_size=32,
                    local_size=32, n_local=2, h=0.2)
    return AlignSeg(AlignSegConfig(**{**settings, **kw}))


def tiny_batch(model: AlignSeg, B: int = 2) -> dict:
    ds = MultiCropDataset(_Images(), model.cfg.crop_spec())
    return collate_multicrop([ds[(i % 3, 100 + i)] for i in range(B)])


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_training_step_gradients_only_on_the_decoder(variant):
    model = tiny_model(variant)
    out = model.training_step(tiny_batch(model), step=0)
    assert {"loss", "loss_proto", "loss_corr", "fg_global", "fg_local"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    assert 0 < out["fg_global"] <= 1
    out["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.decoder.prototypes.grad is not None and model.decoder.prototypes.grad.abs().sum() > 0
    n_decoder = sum(1 for _ in model.decoder.parameters())
    assert sum(len(g["params"]) for g in model.parameter_groups()) == n_decoder


def test_different_crop_sizes_and_no_saliency():
    model = tiny_model("paper", use_saliency=False, global_size=40)
    out = model.training_step(tiny_batch(model), step=0)
    assert torch.isfinite(out["loss"]) and out["fg_global"] == 1


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_a_few_steps_reduce_the_loss(variant):
    model = tiny_model(variant)
    batch = tiny_batch(model, B=3)
    opt = torch.optim.AdamW(model.parameter_groups(), lr=3e-3)
    losses = []
    for step in range(8):
        out = model.training_step(batch, step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]


def test_released_path_argmaxes_on_the_grid_before_upsampling():
    from nbseg.prototype_scores import segment_by_argmax, segment_on_grid

    # two tokens side by side: token 0 prefers prototype 0 strongly (1.0 vs 0), token 1 prototype 1 weakly (0 vs 0.2)
    scores = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.2]]]])               # (B=1, K=2, h=1, w=2)
    assert segment_on_grid(scores, (1, 4)).tolist() == [[[0, 0, 1, 1]]]  # the release: each token's label, nearest
    # nbseg's path interpolates the scores first: at x = 0.75 prototype 0 still wins (0.25 > 0.15)
    assert segment_by_argmax(scores, (1, 4)).tolist() == [[[0, 0, 0, 1]]]
    assert segment_on_grid(scores, 4).shape == (1, 4, 4)


def test_saliency_rule_is_a_config_key():
    from nbseg.saliency import alignseg_saliency, dino_saliency

    crops = torch.rand(2, 3, 32, 32)
    for rule, fn in (("dino", dino_saliency), ("alignseg-released", alignseg_saliency)):
        model = tiny_model(saliency=rule)
        _, mask = model.crop_features(crops)
        attn = model.backbone.extract(crops).attn
        assert torch.equal(mask, fn(attn, 0.6).flatten(1)), rule
    with pytest.raises(ConfigError, match="alignseg-released"):
        AlignSegConfig(saliency="blurred").validate()


def test_predict_provenance_and_config_checks():
    model = tiny_model("paper")
    images = torch.rand(2, 3, 36, 44)                         # not multiples of 8: resized, labels at input size
    labels = model.predict(images)
    assert labels.shape == (2, 36, 44) and labels.min() >= 0 and labels.max() < 4
    prov = model.provenance()
    assert prov["variant"] == "paper" and prov["backbone"] == "embedded" and prov["random_init"]
    assert len(prov["weights_sha256"]) == 64 and "RANDOM INIT" in prov["backbone_description"]
    assert AlignSeg.frozen_prefixes == ("backbone.",)
    with pytest.raises(ConfigError, match="variant"):
        AlignSegConfig(variant="both").validate()
    with pytest.raises(ConfigError, match="patch size"):
        tiny_model(global_size=30)


def test_shipped_configs_load():
    from pathlib import Path

    from nbseg.config import load_config

    root = Path(__file__).resolve().parents[1] / "nbseg" / "configs"
    world = load_config(AlignSegConfig, root / "alignseg_world.yaml")
    voc = load_config(AlignSegConfig, root / "alignseg_voc.yaml")
    assert (voc.n_prototypes, voc.n_layers, voc.global_size, voc.h, voc.seed) == (5, 1, 224, 0.11, 3407)
    assert world.backbone == "embedded" and world.global_size % 8 == 0
    world.validate()
    voc.validate()


def test_trains_through_the_shared_loop(tmp_path):
    from nbseg.train import fit

    model = tiny_model("official", batch_size=3, epochs=2, log_every=1)       # 1 step per epoch
    ds = MultiCropDataset(_Images(), model.cfg.crop_spec())
    summary = fit(model, ds, model.cfg, tmp_path / "run", collate_fn=collate_multicrop, progress=False)
    assert summary["steps"] == 2 and math.isfinite(summary["loss"])
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
