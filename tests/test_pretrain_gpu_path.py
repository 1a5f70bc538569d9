"""The batched (device-side) multi-crop augmentation and iBOT's masked patch loss: values by hand, determinism,
and exact resume of a run that uses both (on CPU; the same code runs on a GPU)."""
import math

import pytest
import torch

from nbseg.pretrain import batched_augment as ba
from nbseg.pretrain import dino
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
    loss = dino.masked_patch_loss(student, teacher, masks, torch.zeros(1, K), 0.1, 0.04)
    assert loss.item() == pytest.approx(math.log(K), rel=1e-6)
    # only masked patches count: a perfect prediction on the masked patch, a bad one elsewhere
    teacher = torch.tensor([[[10.0, 0, 0], [0, 10.0, 0]]])
    student = torch.tensor([[[50.0, 0, 0], [50.0, 0, 0]]])
    loss = dino.masked_patch_loss(student, teacher, masks, torch.zeros(1, K), 1.0, 1e-3)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    none = dino.masked_patch_loss(student, teacher, torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, K), 1.0, 1e-3)
    assert none.item() == 0.0


def test_random_patch_masks_ratio_and_probability():
    gen = torch.Generator().manual_seed(0)
    m = dino.random_patch_masks(2000, (8, 8), (0.1, 0.5), 0.5, gen)
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


def test_device_augmented_patch_loss_run_resumes_exactly(tiny_world, tmp_path):
    full = pretrain(tiny_cfg(tiny_world), tmp_path / "full", progress=False)
    assert full["finished"] and full["steps"] == 4
    pretrain(tiny_cfg(tiny_world, max_steps=3), tmp_path / "resumed", progress=False)
    pretrain(tiny_cfg(tiny_world), tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=False)
    for key in a["teacher"]:
        assert torch.equal(a["teacher"][key], b["teacher"][key]), key
    assert torch.equal(a["center_patch"], b["center_patch"]) and a["center_patch"].abs().sum() > 0
    rows = (tmp_path / "full/log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(float(r.split(",")[header.index("patch_loss")]) > 0 for r in rows[1:])
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
