"""The batched (device-side) multi-crop augmentation and iBOT's masked patch loss: values by hand, determinism,
and exact resume of a run that uses both (on CPU; the same code runs on a GPU)."""
import math

import pytest
import torch

from nbseg.pretrain import batched_augment as ba
from nbseg.pretrain import dino
from nbseg.pretrain.objectives import dense, ibot
from nbseg.pretrain.objectives import targets as teacher_targets
from nbseg.pretrain.dino import MultiCropConfig
from nbseg.pretrain.train import build_networks, pretrain
from tests.test_pretrain import tiny_cfg as plain_tiny_cfg
from tests.test_pretrain import tiny_world  # noqa: F401  (the fixture)


def test_full_crop_without_flip_reproduces_the_image():
    img = torch.rand(2, 3, 16, 16)
    grid = ba.random_crop_grids(2, 16, (1.0, 1.0), torch.Generator().manual_seed(0), "cpu", ratio=(1.0, 1.0),
                                flip_p=0.0)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False)
    torch.testing.assert_close(out, img, atol=1e-5, rtol=0)
    grid = ba.random_crop_grids(2, 16, (1.0, 1.0), torch.Generator().manual_seed(0), "cpu", ratio=(1.0, 1.0),
                                flip_p=1.0)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False)
    torch.testing.assert_close(out, img.flip(-1), atol=1e-5, rtol=0)


def test_crops_cover_the_drawn_area_fraction():
    img = torch.zeros(1, 1, 64, 64)
    img[..., :32] = 1.0                                     # left half white
    gen = torch.Generator().manual_seed(1)
    grid = ba.random_crop_grids(500, 8, (0.25, 0.25), gen, "cpu", ratio=(1.0, 1.0), flip_p=0.0)
    # a crop of a quarter of the area is half the side: its corners lie within +-0.5 of its centre (in [-1, 1])
    span = grid[:, -1, -1] - grid[:, 0, 0]
    assert span.min() > 0.8 and span.max() < 1.0            # 7/8 of the crop side between sample centres
    assert grid.abs().max() <= 1.0


def test_hsv_round_trip_and_hue_rotation():
    x = torch.rand(3, 3, 5, 5)
    torch.testing.assert_close(ba.hsv_to_rgb(ba.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    hsv = ba.rgb_to_hsv(red)
    assert hsv.flatten().tolist() == pytest.approx([0.0, 1.0, 1.0])
    hsv[:, 0] = 1 / 3                                       # a third of the circle: red -> green
    assert ba.hsv_to_rgb(hsv).flatten().tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def test_colour_jitter_applies_only_where_asked_and_keeps_range():
    x = torch.rand(4, 3, 6, 6)
    apply = torch.tensor([True, False, True, False])
    out = ba.colour_jitter_(x, apply, 0.4, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])
    assert not torch.equal(out[0], x[0])
    assert out.min() >= 0 and out.max() <= 1


def test_per_sample_blur_matches_a_gaussian_and_zero_sigma_is_identity():
    x = torch.zeros(2, 1, 21, 21)
    x[:, :, 10, 10] = 1.0
    out = ba.gaussian_blur_per_sample(x, torch.tensor([1.0, 0.0]))
    assert torch.equal(out[1], x[1])
    g = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    g = g / g.sum()
    torch.testing.assert_close(out[0, 0, 7:14, 7:14], torch.outer(g, g), atol=1e-6, rtol=0)   # separable
    assert out[0].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_batched_multicrop_shapes_range_and_seed():
    aug = ba.BatchedMultiCrop(MultiCropConfig(global_size=16, local_size=8, n_local=3, hue=0.5))
    img = torch.rand(5, 3, 24, 24)
    v1 = aug(img, torch.Generator().manual_seed(3))
    v2 = aug(img, torch.Generator().manual_seed(3))
    v3 = aug(img, torch.Generator().manual_seed(4))
    assert [tuple(v.shape) for v in v1] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 3
    assert all(torch.equal(a, b) for a, b in zip(v1, v2)) and not torch.equal(v1[0], v3[0])
    assert all(v.min() >= 0 and v.max() <= 1 for v in v1)
    assert not torch.equal(v1[0], v1[1])                    # the two global views differ


def test_masked_patch_loss_by_hand():
    K = 3
    student = torch.zeros(1, 2, K)                          # uniform student: each term is log K
    teacher = torch.randn(1, 2, K)
    masks = torch.tensor([[True, False]])
    loss = ibot.masked_patch_loss(student, dino.centered_teacher_probs(teacher, torch.zeros(1, K), 0.04), masks, 0.1)
    assert loss.item() == pytest.approx(math.log(K), rel=1e-6)
    # only masked patches count: a perfect prediction on the masked patch, a bad one elsewhere
    teacher = torch.tensor([[[10.0, 0, 0], [0, 10.0, 0]]])
    student = torch.tensor([[[50.0, 0, 0], [50.0, 0, 0]]])
    one_hot = dino.centered_teacher_probs(teacher, torch.zeros(1, K), 1e-3)
    loss = ibot.masked_patch_loss(student, one_hot, masks, 1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    none = ibot.masked_patch_loss(student, one_hot, torch.zeros(1, 2, dtype=torch.bool), 1.0)
    assert none.item() == 0.0


def test_random_patch_masks_ratio_and_probability():
    gen = torch.Generator().manual_seed(0)
    m = ibot.random_patch_masks(2000, (8, 8), (0.1, 0.5), 0.5, gen)
    masked_images = m.any(dim=1).float().mean().item()
    assert m.shape == (2000, 64) and 0.45 < masked_images < 0.55
    frac = m[m.any(dim=1)].float().mean().item()
    assert 0.25 < frac < 0.35                               # mean ratio 0.3 over masked images


def tiny_cfg(root, **kw):
    """test_pretrain's tiny run, with device-side views and the patch loss on every global view."""
    return plain_tiny_cfg(root, **{"augment_on": "device", "patch_loss_weight": 1.0, "mask_prob": 1.0,
                                   "device": "cpu", **kw})


def test_unmasked_tokens_equal_the_backbone_forward(tiny_world):
    student, _ = build_networks(tiny_cfg(tiny_world))
    student.eval()
    x = torch.rand(2, 3, 16, 16)
    cls, patches = student([x, x], [torch.zeros(2, 4, dtype=torch.bool)] * 2, patch_views=2)
    tokens = student.backbone.forward_features(x)
    torch.testing.assert_close(patches[:2], student.head(tokens[:, 1:]))
    torch.testing.assert_close(cls, student([x, x]))
    masked = student._tokens(x, torch.ones(2, 4, dtype=torch.bool))
    assert not torch.allclose(masked, tokens)


def run_stopped_and_resumed(root, tmp_path, **cfg):
    """A tiny run to the end, and the same run stopped after 3 of its 4 steps and resumed; asserts that both end
    with the same teacher and returns (the full run's checkpoint, its log columns)."""
    full = pretrain(tiny_cfg(root, **cfg), tmp_path / "full", progress=False)
    assert full["finished"] and full["steps"] == 4 and math.isfinite(full["loss"])
    pretrain(tiny_cfg(root, max_steps=3, **cfg), tmp_path / "resumed", progress=False)
    pretrain(tiny_cfg(root, **cfg), tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=False)
    for key in a["teacher"]:
        assert torch.equal(a["teacher"][key], b["teacher"][key]), key
    assert torch.equal(a["center_patch"], b["center_patch"])
    header, *rows = [r.split(",") for r in (tmp_path / "full/log.csv").read_text().splitlines()]
    return a, {name: [r[i] for r in rows] for i, name in enumerate(header)}


def test_device_augmented_patch_loss_run_resumes_exactly(tiny_world, tmp_path):
    a, log = run_stopped_and_resumed(tiny_world, tmp_path)
    assert a["center_patch"].abs().sum() > 0
    assert all(float(v) > 0 for v in log["patch_loss"])
    # DINO as published (no patch loss) with device-side views differs from the patch-loss run
    plain = pretrain(tiny_cfg(tiny_world, patch_loss_weight=0.0), tmp_path / "plain", progress=False)
    assert plain["finished"]
    c = torch.load(tmp_path / "plain/checkpoint.pt", weights_only=False)
    assert "mask_token" not in " ".join(c["teacher"])
    assert not torch.equal(a["teacher"]["backbone.pos_embed"], c["teacher"]["backbone.pos_embed"])


def test_recoloured_globals_share_the_crop_geometry():
    aug = ba.BatchedMultiCrop(MultiCropConfig(global_size=16, local_size=8, n_local=1, hue=0.5, colour_jitter=0.4))
    img = torch.rand(6, 3, 32, 32)
    views = aug(img, torch.Generator().manual_seed(0), recolour_globals=True)
    assert len(views) == 5
    plain = aug(img, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views[:3], plain))   # the extra draws come last

    def edges(v):                                            # colour-free structure: luminance gradients
        g = ba.grayscale(v)
        return (g[..., 1:] - g[..., :-1]).abs().flatten(1)

    same = torch.nn.functional.cosine_similarity(edges(views[0]), edges(views[3])).mean()
    other = torch.nn.functional.cosine_similarity(edges(views[0]), edges(views[1])).mean()
    assert same > other + 0.1


def test_teacher_recolour_run_and_its_config_check(tiny_world, tmp_path):
    from nbseg.errors import ConfigError

    out = pretrain(tiny_cfg(tiny_world, teacher_recolour=True, epochs=1), tmp_path / "r", progress=False)
    assert out["finished"] and math.isfinite(out["loss"])
    with pytest.raises(ConfigError, match="augment_on=device"):
        tiny_cfg(tiny_world, teacher_recolour=True, augment_on="cpu").validate()


def test_corresponding_positions_read_the_same_image_point():
    # An image whose pixels hold their own (x, y) coordinates: the value under token j of crop a must equal the
    # value of crop b read at corresponding_positions(a, b)[j], wherever that point lies inside b.
    gen = torch.Generator().manual_seed(3)
    B, H = 16, 48
    theta_a = ba.random_crop_thetas(B, (0.2, 1.0), gen, "cpu")
    theta_b = ba.random_crop_thetas(B, (0.2, 1.0), gen, "cpu")
    line = (2 * torch.arange(H) + 1) / H - 1
    yy, xx = torch.meshgrid(line, line, indexing="ij")
    coords = torch.stack([xx, yy]).expand(B, 2, H, H)
    F = torch.nn.functional
    view_a = F.grid_sample(coords, F.affine_grid(theta_a, [B, 2, 6, 6], align_corners=False), align_corners=False)
    view_b = F.grid_sample(coords, F.affine_grid(theta_b, [B, 2, 24, 24], align_corners=False), align_corners=False)
    pos, inside = ba.corresponding_positions(theta_a, theta_b, (6, 6))
    read = F.grid_sample(view_b, pos, align_corners=False)
    assert pos.shape == (B, 6, 6, 2) and 0.1 < inside.float().mean() < 1.0
    # away from the outer half pixel of view b and of the image, where bilinear sampling pads
    interior = inside & (pos.abs() <= 1 - 1 / 24).all(-1) & (view_a.abs() <= 1 - 1 / H).all(1)
    assert interior.float().mean() > 0.3
    torch.testing.assert_close(read.permute(0, 2, 3, 1)[interior], view_a.permute(0, 2, 3, 1)[interior])
    # a crop maps onto itself: every token centre is its own position and inside
    same, all_inside = ba.corresponding_positions(theta_a, theta_a, (6, 6))
    assert all_inside.all()
    centres = (2 * torch.arange(6) + 1) / 6 - 1
    torch.testing.assert_close(same[0, :, :, 0], centres.expand(6, 6))


def test_cross_view_patch_loss_by_hand():
    K, B, h, w = 5, 1, 2, 2
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2 * B, h * w, K, generator=gen)
    teacher = torch.randn(2 * B, h * w, K, generator=gen)
    # view 1 is view 0 flipped left-right: token (i, j) of one is token (i, w - 1 - j) of the other
    centres = torch.tensor([-0.5, 0.5])
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    flipped = torch.stack([-xx, yy], dim=-1).view(1, h, w, 2)
    positions = flipped.expand(2, 2, B, h, w, 2).clone()
    inside = torch.ones(2, 2, B, h, w, dtype=torch.bool)
    inside[0, 1, 0, 0, 0] = False                       # one token of view 0 falls outside view 1
    targets = dino.centered_teacher_probs(teacher, torch.zeros(1, K), 0.04)
    loss = dense.cross_view_patch_loss(student, targets, positions, inside, 0.1)

    p_t = torch.softmax(teacher / 0.04, -1).view(2, h, w, K).flip(2).view(2, h * w, K)
    logp_s = torch.log_softmax(student / 0.1, -1)
    ce = -(p_t.flip(0) * logp_s).sum(-1)                  # student view a against the teacher's view b = 1 - a
    expected = (ce[0, 1:].mean() + ce[1].mean()) / 2
    torch.testing.assert_close(loss, expected)


def test_cross_view_sinkhorn_colour_lut_run_resumes_exactly(tiny_world, tmp_path):
    from nbseg.errors import ConfigError

    cfg = dict(patch_loss_weight=0.0, cross_view_loss_weight=1.0, teacher_targets="sinkhorn", colour_lut_p=0.5)
    a, log = run_stopped_and_resumed(tiny_world, tmp_path, **cfg)
    assert "mask_token" not in " ".join(a["teacher"]) and a["center_patch"].abs().sum() > 0
    assert all(float(v) > 0 for v in log["cross_view_loss"]) and not any(log["patch_loss"])
    with pytest.raises(ConfigError, match="augment_on=device"):
        tiny_cfg(tiny_world, augment_on="cpu", **cfg).validate()


def test_sinkhorn_knopp_targets_are_balanced_and_follow_the_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 8, generator=gen)
    logits[:, 0] += 3.0                                    # prototype 0 dominates every sample's softmax
    q = teacher_targets.sinkhorn_knopp_teacher_probs(logits, 0.5, n_iters=50)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(q.mean(dim=0), torch.full((8,), 1 / 8), atol=1e-3, rtol=0)   # equipartition
    soft = torch.softmax(logits / 0.5, dim=1)
    assert soft.mean(dim=0)[0] > 0.5                        # centering-free softmax would pile onto prototype 0
    # Q is exp(logits / tau) rescaled by one factor per prototype and one per sample: log Q - logits / tau is
    # a sum of a row and a column term (so within a sample, prototypes keep the order of their rescaled logits)
    d = torch.log(q) - logits / 0.5
    interaction = d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()
    assert interaction.abs().max() < 1e-3
    # teacher_probs applies it over all leading dimensions (every patch of every image at once)
    patches = torch.randn(4, 16, 8, generator=gen)
    out = teacher_targets.teacher_probs(patches, "sinkhorn", torch.zeros(1, 8), 0.5)
    torch.testing.assert_close(out, teacher_targets.sinkhorn_knopp_teacher_probs(patches.view(64, 8), 0.5).view(4, 16, 8))
    with pytest.raises(ValueError, match="sinkhorn"):
        teacher_targets.teacher_probs(patches, "softmax", torch.zeros(1, 8), 0.5)


def test_random_colour_lut_is_a_per_image_function_of_colour():
    gen = torch.Generator().manual_seed(0)
    n = 500
    red, blue = torch.tensor([0.85, 0.2, 0.2]), torch.tensor([0.2, 0.4, 0.85])
    stripes = (torch.arange(8) % 2 == 0).view(1, 1, 1, 8)              # a two-colour pattern
    x = torch.where(stripes, red.view(1, 3, 1, 1), blue.view(1, 3, 1, 1)).expand(n, 3, 4, 8).contiguous()
    apply = torch.arange(n) % 5 != 0
    y = ba.random_colour_lut(x, apply, 4, gen)
    assert torch.equal(y[~apply], x[~apply]) and 0 <= y.min() and y.max() <= 1
    # a function of colour: equal input colours stay equal, so the pattern survives
    assert torch.allclose(y[:, :, :, 0::2], y[:, :, :, :1].expand(-1, -1, -1, 4))
    assert torch.allclose(y[:, :, :, 1::2], y[:, :, :, 1:2].expand(-1, -1, -1, 4))
    # ... while the two colours are redrawn independently: their new values are uncorrelated over images
    a, b = y[apply][:, 0, 0, 0], y[apply][:, 0, 0, 1]
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(corr) < 0.2 and a.std() > 0.1


def test_colour_lut_views_and_its_config_check(tiny_world):
    from nbseg.errors import ConfigError

    aug = ba.BatchedMultiCrop(MultiCropConfig(global_size=16, local_size=8, n_local=1, colour_lut_p=1.0))
    img = torch.rand(4, 3, 32, 32)
    views = aug(img, torch.Generator().manual_seed(0))
    plain = ba.BatchedMultiCrop(MultiCropConfig(global_size=16, local_size=8, n_local=1))(
        img, torch.Generator().manual_seed(0))
    assert [v.shape for v in views] == [v.shape for v in plain] and not torch.allclose(views[0], plain[0])
    with pytest.raises(ConfigError, match="augment_on=device"):
        tiny_cfg(tiny_world, augment_on="cpu", patch_loss_weight=0.0, colour_lut_p=0.5).validate()


def _identity_pairs(B, h, w):
    """positions/inside for two views that are the same crop: every token corresponds to itself."""
    ys = (2 * torch.arange(h) + 1) / h - 1
    xs = (2 * torch.arange(w) + 1) / w - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    return grid.expand(2, 2, B, h, w, 2).clone(), torch.ones(2, 2, B, h, w, dtype=torch.bool)


def test_dense_info_nce_counts_only_other_images_as_negatives():
    B, h, w, D = 3, 2, 2, 8
    positions, inside = _identity_pairs(B, h, w)
    constant = torch.nn.functional.normalize(torch.ones(2 * B, h * w, D), dim=-1)
    # a constant embedding: the positive and the 2 * 4 other images' tokens tie -> log 9 (same-image tokens excluded)
    loss = dense.dense_info_nce_loss(constant, constant, positions, inside, 0.2)
    assert loss.item() == pytest.approx(math.log(9), rel=1e-5)
    # embeddings that tell images apart but not tokens within an image are already perfect
    per_image = torch.nn.functional.normalize(torch.eye(D)[:B], dim=-1).repeat(2, 1).unsqueeze(1).expand(-1, h * w, D)
    assert dense.dense_info_nce_loss(per_image, per_image, positions, inside, 0.05).item() < 1e-3
    # by hand for one pair of views with one valid token per image
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2 * B, h * w, D, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(2 * B, h * w, D, generator=gen), dim=-1)
    only = torch.zeros_like(inside)
    only[:, :, :, 0, 0] = True
    got = dense.dense_info_nce_loss(q, k, positions, only, 0.5)
    expected = 0.0
    for a, b in ((0, 1), (1, 0)):
        qa, kb = q.view(2, B, h * w, D)[a, :, 0], k.view(2, B, h * w, D)[b, :, 0]
        expected += torch.nn.functional.cross_entropy(qa @ kb.t() / 0.5, torch.arange(B)) / 2
    torch.testing.assert_close(got, expected)


def test_dense_contrastive_run_resumes_exactly(tiny_world, tmp_path):
    cfg = dict(patch_loss_weight=0.0, cross_view_loss_weight=1.0, dense_contrastive_weight=1.0,
               contrastive_max_queries=8)
    _, log = run_stopped_and_resumed(tiny_world, tmp_path, **cfg)
    assert all(float(v) > 0 for v in log["contrastive_loss"]) and all(float(v) > 0 for v in log["cross_view_loss"])
