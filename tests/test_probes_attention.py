"""The 5%-step threshold sweep on maps whose best threshold is known by hand."""
import pytest
import torch

from nbseg.probes.attention import (best_per_image, head_maps, summarise_sweep, sweep_curves, sweep_thresholds,
                                    threshold_masks, threshold_sweep)


def one_object(n=3, grid=4, patch=2):
    """Foreground = the top-left 2x2 patches. Attention 3 on them and 1 on the 12 others: the foreground holds
    exactly half the mass and any 3 of its patches 3/8, so keeping a fraction t in (0.375, 0.5] keeps exactly it."""
    attn = torch.ones(n, grid, grid)
    attn[:, :2, :2] = 3.0
    fg = torch.zeros(n, grid * patch, grid * patch, dtype=torch.bool)
    fg[:, : 2 * patch, : 2 * patch] = True
    return attn, fg


def test_grids_have_5_percent_steps():
    mass, value = sweep_thresholds("mass"), sweep_thresholds("value")
    assert len(mass) == 20 and mass[0].item() == 0.05 and mass[-1].item() == 1.0 and 0.6 in mass.tolist()
    assert len(value) == 20 and value[0].item() == 0.0 and value[-1].item() == 0.95
    with pytest.raises(ValueError, match="unknown threshold rule"):
        sweep_thresholds("median")


def test_mass_sweep_finds_the_known_threshold():
    attn, fg = one_object()
    table = threshold_sweep(attn, fg)
    assert list(table.columns) == ["image", "map", "threshold", "iou"] and len(table) == 3 * 20
    curve = sweep_curves(table)["map 0"]
    assert curve[0.4] == 1.0 and curve[0.45] == 1.0
    assert curve[0.35] < 1.0 and curve[0.6] < 1.0 and curve[1.0] == pytest.approx(0.25)   # all kept: 16 / 64
    best = best_per_image(table)
    assert (best["threshold"] == 0.4).all() and (best["iou"] == 1.0).all()           # smallest of the ties


def test_value_sweep_and_per_map_summary():
    attn, fg = one_object()
    similarity = torch.where(attn > 2, 0.8, 0.3)                                       # cosine-like values
    maps = torch.stack([similarity, 1.0 - similarity], dim=1)                           # a good and an inverted map
    table = threshold_sweep(maps, fg, rule="value", map_names=["good", "inverted"], image_ids=["a", "b", "c"])
    assert set(table["image"]) == {"a", "b", "c"}
    summary = summarise_sweep(table).set_index("map")
    # value rule: any threshold in (0.3, 0.8] separates the object exactly; the first on the grid is 0.35
    assert summary.loc["good", "dataset_threshold"] == 0.35 and summary.loc["good", "dataset_iou"] == 1.0
    assert summary.loc["inverted", "dataset_iou"] < 0.5
    assert summary.loc["good", "per_image_best_iou"] >= summary.loc["good", "dataset_iou"]    # the oracle bound
    assert summary.loc["good", "per_image_threshold_iqr"] == 0.0


def test_ignored_pixels_do_not_count():
    attn, fg = one_object(n=1)
    valid = torch.ones_like(fg)
    valid[:, 4:, :] = False                                      # the bottom half is unlabelled
    full = threshold_sweep(attn, fg, thresholds=[1.0])["iou"].item()
    masked = threshold_sweep(attn, fg, valid, thresholds=[1.0])["iou"].item()
    assert full == pytest.approx(0.25) and masked == pytest.approx(0.5)


def test_head_maps_and_masks():
    attn = torch.rand(2, 3, 4, 4)
    maps, names = head_maps(attn)
    assert maps.shape == (2, 4, 4, 4) and names == ["head 0", "head 1", "head 2", "mean"]
    assert torch.allclose(maps[:, 3], attn.mean(1))
    assert threshold_masks(torch.tensor([0.2, 0.5, 0.9]).view(1, 3), 0.5, "value").tolist() == [[False, True, True]]


def test_sweep_rejects_mismatched_shapes():
    attn, fg = one_object()
    with pytest.raises(ValueError, match="same N images"):
        threshold_sweep(attn[:2], fg)
    with pytest.raises(ValueError, match="map names"):
        threshold_sweep(attn, fg, map_names=["a", "b"])
