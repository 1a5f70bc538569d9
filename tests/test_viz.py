"""nbseg.viz: every function returns a titled Figure with the expected panels; colours and overlays are right."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from nbseg import viz
from nbseg.io import save_figure
from nbseg.world import voc_palette

TITLE = "embedded (sha 1a2b) on world/val"
B, H, W = 3, 32, 48


@pytest.fixture
def images():
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def labels():
    lab = torch.zeros(B, H, W, dtype=torch.long)
    lab[:, : H // 2] = 3
    lab[:, :, : W // 4] = 255
    return lab


def _check(fig, n_axes: int) -> None:
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() == TITLE
    assert len(fig.axes) == n_axes


def test_label_palette_is_the_voc_colour_map():
    pal = viz.label_palette(21)
    assert pal.shape == (21, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == voc_palette()[3:6] == [128, 0, 0]
    with pytest.raises(ValueError, match="256"):
        viz.label_palette(300)


def test_colorize_maps_classes_and_ignore():
    label = np.array([[0, 1, 255], [2, 255, 15]])
    out = viz.colorize(label)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    pal = viz.label_palette(256)
    assert out[0, 0].tolist() == pal[0].tolist()
    assert out[0, 1].tolist() == pal[1].tolist()
    assert out[1, 2].tolist() == pal[15].tolist()
    assert out[0, 2].tolist() == out[1, 1].tolist() == viz.IGNORE_COLOR.tolist()
    # with another ignore index, 255 is an ordinary label and -1 is ignored
    other = viz.colorize(np.array([[255, -1]]), ignore_index=-1)
    assert other[0, 0].tolist() == pal[255].tolist() and other[0, 1].tolist() == viz.IGNORE_COLOR.tolist()
    with pytest.raises(ValueError, match="0..255"):
        viz.colorize(np.array([[0, 300]]))


def test_overlay_shapes_and_nearest_upsampling(images):
    small = torch.tensor([[1, 2], [255, 0]])
    out = viz.overlay(images[0], small, alpha=1.0)
    assert out.shape == (H, W, 3) and out.dtype == np.float32
    pal = viz.label_palette(3) / 255.0
    np.testing.assert_allclose(out[0, 0], pal[1], atol=1e-6)            # top-left quadrant: class 1
    np.testing.assert_allclose(out[0, W - 1], pal[2], atol=1e-6)        # top-right quadrant: class 2
    image_hwc = images[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out[H - 1, 0], image_hwc[H - 1, 0], atol=1e-6)  # ignored: the plain image
    # (H, W, 3) uint8 input and alpha 0 give the image back
    uint8 = (np.arange(H * W * 3) % 256).astype(np.uint8).reshape(H, W, 3)
    np.testing.assert_allclose(viz.overlay(uint8, np.zeros((H, W), int), alpha=0.0), uint8 / 255.0, atol=1e-6)


def test_segmentation_grid(images, labels, tmp_path):
    fig = viz.segmentation_grid(images, {"ground truth": labels, "k-means": list(labels.numpy())},
                                title=TITLE, class_names=["background", "a", "b", "c"])
    _check(fig, B * 3)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "ground truth", "k-means"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "c"]  # those that appear
    path = save_figure(fig, tmp_path / "grid.png")
    assert Image.open(path).size[0] > 100
    _check(viz.segmentation_grid(images, {"gt": labels}, title=TITLE, max_rows=2), 2 * 2)
    with pytest.raises(ValueError, match="'gt' has 1 label maps"):
        viz.segmentation_grid(images, {"gt": labels[:1]}, title=TITLE)
    with pytest.raises(ValueError, match="title"):
        viz.segmentation_grid(images, {"gt": labels}, title="")


def test_attention_figure(images, tmp_path):
    attn = torch.rand(B, 6, 4, 6)
    _check(viz.attention_figure(images, attn, title=TITLE), B * (2 + 6))
    fig = viz.attention_figure(images, attn.numpy(), title=TITLE, masks=attn.mean(1) > 0.5, heads=[0, 5],
                               interpolation="bilinear")
    _check(fig, B * 4)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "head mean", "head 0", "head 5"]
    save_figure(fig, tmp_path / "attn.pdf")
    _check(viz.attention_figure(images, attn, title=TITLE, masks=attn > 0.5, heads=[1]), B * 3)
    with pytest.raises(ValueError, match=r"0\.\.5"):
        viz.attention_figure(images, attn, title=TITLE, heads=[6])


def test_mask_figure_reports_iou(images):
    masks = torch.zeros(B, H, W, dtype=torch.bool)
    masks[:, : H // 2] = True
    gt = masks.clone()
    gt[1] = False
    gt[1, :, : W // 2] = True  # half of the mask, half outside: IoU = 1/3
    fig = viz.mask_figure(images, masks, title=TITLE, gt_masks=gt, columns=2)
    _check(fig, B)
    assert [ax.get_title() for ax in fig.axes] == ["IoU 1.00", "IoU 0.33", "IoU 1.00"]
    _check(viz.mask_figure(images, masks[:, ::4, ::4], title=TITLE), B)  # patch-level masks are upsampled


def test_curve_figure():
    fig = viz.curve_figure(np.linspace(0, 1, 5), {"train": np.arange(5), "val": torch.arange(5.0)},
                           title=TITLE, xlabel="threshold", ylabel="IoU")
    _check(fig, 1)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train", "val"]
    assert fig.axes[0].get_xlabel() == "threshold"
    _check(viz.curve_figure(None, {"loss": [3.0, 2.0, 1.0]}, title=TITLE, xlabel="step", ylabel="loss"), 1)
    with pytest.raises(ValueError, match="'val' has 2 values for 5"):
        viz.curve_figure(np.arange(5), {"val": [1, 2]}, title=TITLE, xlabel="x", ylabel="y")


def test_table_heatmap(tmp_path):
    df = pd.DataFrame(np.eye(3) * 0.5, index=["p0", "p1", "p2"], columns=["ball", "box", "sky"])
    fig = viz.table_heatmap(df, title=TITLE, fmt=".1f")
    _check(fig, 2)  # the map and its colour bar
    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["0.5", "0.0"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["ball", "box", "sky"]
    save_figure(fig, tmp_path / "table.png")
    with pytest.raises(ValueError, match="'name'"):
        viz.table_heatmap(df.assign(name="x"), title=TITLE)


def test_embedding_scatter_colours_points_by_label():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5], [3.0, 3.0]])
    labels = np.array([0, 2, 255, 2])
    fig = viz.embedding_scatter({"by class": (points, labels, ["background", "a", "b"]),
                                 "by cluster": (torch.tensor(points), torch.tensor([1, 1, 0, 0]))}, title=TITLE)
    _check(fig, 2)
    colours = fig.axes[0].collections[0].get_facecolors()[:, :3]
    pal = viz.label_palette(3) / 255.0
    np.testing.assert_allclose(colours[1], pal[2])
    np.testing.assert_allclose(colours[2], [0.8] * 3)                                   # ignored: grey
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["background", "b"]
    assert fig.axes[1].get_legend() is None and fig.axes[1].get_title() == "by cluster"
    with pytest.raises(ValueError, match="points \\(M, 2\\)"):
        viz.embedding_scatter({"bad": (points[:, :1], labels)}, title=TITLE)


def test_histogram_figure_overlays_weighted_series():
    values = np.array([10.0, 20.0, 20.0, 170.0])
    fig = viz.histogram_figure({"intra": {"image": values, "dataset": (values, np.array([1, 0, 0, 0]))},
                                "inter": {"image": [], "dataset": values}},
                               title=TITLE, xlabel="degrees", bins=18, value_range=(0, 180))
    _check(fig, 2)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["image (empty)", "dataset"]
    heights = [p.get_xy()[:, 1].max() for p in fig.axes[0].patches]                   # density peaks
    # unweighted: at most half the samples in one 10-degree bin (0.05 / degree); weighted: all its mass (0.1)
    assert heights == pytest.approx([0.05, 0.1])
    with pytest.raises(ValueError, match="no panels"):
        viz.histogram_figure({}, title=TITLE, xlabel="x")
