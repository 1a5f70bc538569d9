"""Saliency rules on maps where the answer is known by hand."""
import pytest
import torch

from nbseg.saliency import (alignseg_saliency, dino_saliency, keep_mass_mask, mask_iou, mean_threshold_saliency,
                            remove_small_components)


def test_keep_mass_keeps_smallest_top_set_holding_the_fraction():
    attn = torch.tensor([[0.5, 0.1], [0.3, 0.1]])
    # ascending cumulative mass: 0.1, 0.2, 0.5, 1.0; keep where > 1 - t
    assert keep_mass_mask(attn, 0.6).tolist() == [[True, False], [True, False]]
    assert keep_mass_mask(attn, 0.5).tolist() == [[True, False], [False, False]]
    assert keep_mass_mask(attn, 1.0).all()
    # scale invariance: the rule uses the normalised mass
    assert torch.equal(keep_mass_mask(attn * 7, 0.6), keep_mass_mask(attn, 0.6))


def test_keep_mass_is_per_map_on_batched_heads():
    attn = torch.zeros(2, 3, 4, 4)
    attn[..., 0, 0] = 1.0
    attn[1, 2] = 1.0                                   # a flat head keeps (almost) everything at t=0.95
    masks = dino_saliency(attn + 1e-9, 0.5, head="each")
    assert masks.shape == (2, 3, 4, 4)
    assert masks[0, 0].sum() == 1 and masks[0, 0, 0, 0]
    assert masks[1, 2].sum() >= 8                       # half the mass of a flat map needs half the patches


def test_alignseg_drops_isolated_patches_and_keeps_blobs():
    attn = torch.full((1, 2, 10, 10), 0.01)
    attn[:, :, 2:6, 2:6] = 1.0                          # a 4x4 blob
    attn[:, :, 8, 8] = 3.0                              # one isolated strong patch
    mask = alignseg_saliency(attn, fraction=0.6)
    assert mask[0, 3, 3] and mask[0, 4, 4]
    assert not mask[0, 8, 8]
    small = torch.zeros(1, 5, 5, dtype=torch.bool)
    small[0, 0, 0] = small[0, 0, 1] = True              # component of 2 patches: removed
    small[0, 3:5, 3:5] = True                           # component of 4 patches: kept
    kept = remove_small_components(small, 2)
    assert kept.sum() == 4 and kept[0, 4, 4]


def test_mean_threshold_and_iou():
    attn = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])
    assert mean_threshold_saliency(attn).tolist() == [[[False, False], [False, True]]]   # mean is 2.0
    pred = torch.tensor([[[True, True], [False, False]]])
    gt = torch.tensor([[[True, False], [True, False]]])
    assert mask_iou(pred, gt).item() == pytest.approx(1 / 3)
    valid = torch.tensor([[[True, True], [False, True]]])
    assert mask_iou(pred, gt, valid).item() == pytest.approx(1 / 2)
