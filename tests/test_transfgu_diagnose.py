"""TransFGU's pseudo-label diagnosis (issue #16): each measurement on a hand-built case."""
from __future__ import annotations

import pytest
import torch

from nbseg.methods.transfgu import diagnose as D


def test_tie_share_counts_patches_the_argmax_decides_by_order():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, :, 0, 0] = torch.tensor([0.2, 0.9, 0.1])         # clear winner
    maps[0, :, 0, 1] = torch.tensor([0.5, 0.5, 0.1])         # tie at the top
    maps[0, :, 1, 0] = torch.tensor([0.0, 0.0, 0.0])         # all zero (the released map off its kept mass)
    maps[0, :, 1, 1] = torch.tensor([0.1, 0.3, 0.3])         # tie
    assert D.tie_share(maps) == pytest.approx(0.75)
    assert D.tie_share(maps[:, :1]) == 0.0


def test_group_errors_on_a_hand_built_split():
    is_thing = torch.tensor([True, True, False])             # classes 0, 1 things, 2 stuff
    gts = torch.tensor([[[0, 1, 2, 2], [2, 2, 255, 0]]])     # 3 thing pixels, 4 stuff pixels, 1 ignored
    ids = torch.tensor([[[0, 3, 1, 3], [3, 3, 2, 0]]])       # 2 thing concepts (0, 1), stuff concepts 2, 3
    e = D.group_errors(ids, 2, gts, is_thing)
    assert e["thing_as_stuff"] == pytest.approx(1 / 3)       # the class-1 pixel got stuff concept 3
    assert e["stuff_as_thing"] == pytest.approx(1 / 4)       # one stuff pixel got thing concept 1
    assert e["group_acc"] == pytest.approx(5 / 7)
    assert e["thing_pixels"] == pytest.approx(3 / 7)


def test_foreground_split_upsamples_the_patch_mask():
    is_thing = torch.tensor([True, False])
    fg = torch.tensor([[[True, False], [False, False]]])     # (1, 2, 2) patch grid
    gts = torch.ones(1, 4, 4, dtype=torch.long)
    gts[0, :2, :2] = 0                                        # the thing fills the top-left patch exactly
    gts[0, 0, 2] = 0                                          # and one pixel of the next patch
    e = D.foreground_split(fg, gts, is_thing)
    assert e["thing_as_stuff"] == pytest.approx(1 / 5)
    assert e["stuff_as_thing"] == 0.0


def test_argmax_within_group_only_picks_concepts_of_the_pixels_group():
    maps = torch.tensor([[[[0.9]], [[0.1]], [[0.5]]]])       # (1, 3, 1, 1): concepts 0, 1 things, 2 stuff
    thing = torch.tensor([[[True, False]]])                  # (1, 1, 2)
    out = D.argmax_within_group(maps, 2, thing)
    assert out.tolist() == [[[0, 2]]]                        # the stuff pixel cannot take thing concept 0


def test_group_concept_quality_per_bank():
    is_thing = torch.tensor([True, True, False])
    concepts = torch.tensor([[0, 0, 1, 2, 2, -1]])
    groups = torch.tensor([[0, 0, 0, 1, 1, -1]])
    majority = torch.tensor([[0, 2, 1, 2, 2, 0]])
    q = D.group_concept_quality(concepts, groups, majority, is_thing)
    assert q["things"]["purity"] == pytest.approx(2 / 3)      # concept 0 holds classes 0 and 2
    assert q["things"]["right_kind"] == pytest.approx(2 / 3)  # one thing crop is mostly stuff
    assert q["stuff"]["purity"] == 1.0 and q["stuff"]["right_kind"] == 1.0
    assert q["stuff"]["n_crops"] == 2


def test_split_cosine_maps_keep_each_group_on_its_side_of_the_foreground():
    from nbseg.methods.transfgu.bank import split_cosine_maps

    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])          # concepts 0, 1 things, 2 stuff
    patches = torch.tensor([[[[2.0, 0.0], [0.0, 3.0]]]])                     # (1, 1, 2, 2): two patches
    fg = torch.tensor([[[True, False]]])                                     # patch 0 foreground
    maps = split_cosine_maps(patches, centroids, 2, fg)
    assert maps.shape == (1, 3, 1, 2)
    assert maps[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, -1.0])      # stuff concept off the foreground
    assert maps[0, :, 0, 1].tolist() == pytest.approx([-1.0, -1.0, 2 ** -0.5])  # things off the background
    assert maps[0].argmax(0).tolist() == [[0, 2]]
    unsplit = split_cosine_maps(patches, centroids, 0, fg)                   # no things: every concept everywhere
    assert unsplit[0, :, 0, 1].tolist() == pytest.approx([0.0, 1.0, 2 ** -0.5])


def test_pseudo_maps_option_is_checked():
    from nbseg.errors import ConfigError
    from nbseg.methods.transfgu.model import TransFGUConfig

    TransFGUConfig(pseudo_maps="cosine").validate()
    with pytest.raises(ConfigError, match="pseudo_maps"):
        TransFGUConfig(pseudo_maps="gradcam++").validate()


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_relu_of_minus_gradient_marks_patches_that_bring_cls_to_the_concept(variant):
    """The sign the diagnosis relies on: more CLS attention on a patch changes Eq. (5)'s loss by about g times the
    step (a small step on the real last block), so relu(-g) marks the patches that bring CLS to the concept."""
    from nbseg.backbones import load
    from nbseg.methods.transfgu import gradcam as G

    vit = load("embedded", random_init=True)
    gen = torch.Generator().manual_seed(3)
    images, concepts = torch.rand(1, 3, 32, 32, generator=gen), torch.randn(2, vit.dim, generator=gen)
    tokens = G.last_block_inputs(vit, images)
    grads, row = G.attention_gradients(vit, tokens, concepts, variant, "backward")
    g = grads[0, 0, :, 1:].mean(0)                                   # concept 0, head mean, patch columns

    def loss_after(patch: int) -> float:
        bumped = row.clone()
        bumped[0, :, 1 + patch] += 1e-3
        return float(G.concept_losses(G.cls_from_attention_row(vit, tokens, bumped), concepts, variant)[0, 0])

    base = float(G.concept_losses(G.cls_from_attention_row(vit, tokens, row), concepts, variant)[0, 0])
    for patch in (int(g.argmin()), int(g.argmax()), 0):
        assert loss_after(patch) - base == pytest.approx(1e-3 * float(g[patch] * vit.num_heads), rel=0.05)


def test_cosine_pseudo_label_bank_is_stored_apart_from_grad_cam(tmp_path):
    """``pseudo_maps: cosine`` end to end on a tiny world: the stored maps are split_cosine_maps of the backbone's
    own tokens and foreground, in their own store (the Grad-CAM bank of the same concepts is not overwritten)."""
    import numpy as np

    from nbseg.backbones import load
    from nbseg.methods.transfgu import evaluation as E
    from nbseg.methods.transfgu.bank import load_images, split_cosine_maps
    from nbseg.methods.transfgu.data import open_split
    from nbseg.methods.transfgu.model import TransFGUConfig
    from nbseg.saliency import mean_threshold_saliency
    from nbseg.world import WorldSpec, write_world

    root = write_world(tmp_path / "world", WorldSpec(size=32, n_train=6, n_val=2), workers=1, progress=False)
    vit = load("embedded", random_init=True)
    common = dict(data_root=str(root), image_size=32, crop_size=16, crop_scales=[0.6, 0.5], train_limit=4,
                  n_things=2, n_stuff=1, fg_threshold=0.3, bg_threshold=0.5, cache_root=str(tmp_path / "cache"))
    cos = E.prepare(TransFGUConfig(pseudo_maps="cosine", **common), vit, progress=False)
    grad = E.prepare(TransFGUConfig(**common), vit, progress=False)
    assert cos.pseudo.path != grad.pseudo.path and cos.concepts.path == grad.concepts.path
    out = vit.extract(load_images(open_split(TransFGUConfig(**common)), 0, 4, 32))
    expected = split_cosine_maps(out.patches, cos.concepts.centroids, 2, mean_threshold_saliency(out.attn))
    assert cos.pseudo.maps.shape == (4, 3, 4, 4)
    assert np.allclose(cos.pseudo.tensor().numpy(), expected.numpy(), atol=2e-3)      # fp16 store
    assert not np.allclose(grad.pseudo.tensor().numpy(), cos.pseudo.tensor().numpy(), atol=2e-3)
