"""Image-panel figures: segmentation grids (image, ground truth, predictions side by side), attention maps and
saliency masks, each titled with what produced it."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from nbseg.viz.colour import (IGNORE_INDEX, _as_batch, _binary_iou, _image_hwc, _label_2d, _resize_nearest,
                              _to_numpy, label_palette, overlay)

__all__ = ["PANEL_INCHES", "segmentation_grid", "attention_figure", "mask_figure"]

PANEL_INCHES = 2.2          # edge of one image panel


# ----------------------------------------------------------------------------------------------------------------
# figure helpers


def _panel_grid(rows: int, cols: int, title: str) -> tuple[Figure, np.ndarray]:
    """A titled figure with a ``rows x cols`` grid of image panels (axes off), as a 2-D array of axes."""
    if not title or not str(title).strip():
        raise ValueError("a figure needs a title naming the backbone, the weights and the dataset behind it")
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title)
    return fig, axes


def _legend_handles(class_ids: Sequence[int], class_names: Sequence[str] | Mapping[int, str]) -> list[Patch]:
    """One coloured patch per class id, labelled with its name (a list indexed by id, or a dict)."""
    palette = label_palette(256) / 255.0
    names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    return [Patch(facecolor=palette[i], edgecolor="0.3", label=names.get(int(i), str(i))) for i in class_ids]


def _class_legend(fig: Figure, class_ids: Sequence[int], class_names: Sequence[str] | Mapping[int, str]) -> None:
    """A legend of the colours of ``class_ids`` (those that appear), below the panels."""
    handles = _legend_handles(class_ids, class_names)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize="small",
                   frameon=False)


def _take_rows(images: Any, max_rows: int) -> list[np.ndarray]:
    batch = _as_batch(images)
    if not batch:
        raise ValueError("no images to draw")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    return batch[:max_rows]


# ----------------------------------------------------------------------------------------------------------------
# figures


def segmentation_grid(images: Any, columns: Mapping[str, Any], *, title: str, max_rows: int = 8,
                      class_names: Sequence[str] | Mapping[int, str] | None = None, alpha: float = 0.5,
                      ignore_index: int | None = IGNORE_INDEX) -> Figure:
    """One row per image: the image, then one overlay per named label set (``"ground truth"``, ``"k-means"``...).

    ``columns`` maps a column title to the label maps of the images, in the same order (a list of ``(H, W)`` maps
    or a stacked ``(B, H, W)`` tensor). At most ``max_rows`` images are drawn. With ``class_names`` (a list
    indexed by class id, or a dict) a legend lists the classes that appear in the drawn maps.
    """
    rows = _take_rows(images, max_rows)
    label_sets = {name: _as_batch(maps) for name, maps in columns.items()}
    for name, maps in label_sets.items():
        if len(maps) < len(rows):
            raise ValueError(f"segmentation_grid: column {name!r} has {len(maps)} label maps for "
                             f"{len(rows)} images; pass one map per image")
    fig, axes = _panel_grid(len(rows), 1 + len(label_sets), title)
    shown_ids: set[int] = set()
    for r, image in enumerate(rows):
        axes[r, 0].imshow(_image_hwc(image))
        for c, maps in enumerate(label_sets.values(), start=1):
            label = _label_2d(maps[r])
            axes[r, c].imshow(overlay(image, label, alpha=alpha, ignore_index=ignore_index))
            shown_ids.update(int(v) for v in np.unique(label) if v != ignore_index)
    for c, name in enumerate(["image", *label_sets]):
        axes[0, c].set_title(name)
    if class_names is not None:
        _class_legend(fig, sorted(shown_ids), class_names)
    return fig


def attention_figure(images: Any, attn: Any, *, title: str, masks: Any = None,
                     heads: str | Sequence[int] = "all", max_rows: int = 8, interpolation: str = "nearest",
                     cmap: str = "inferno") -> Figure:
    """Per image: the image, the head-mean attention and each selected head's attention, upsampled to the image.

    ``attn`` is ``(B, heads, h, w)`` (CLS-to-patch attention on the patch grid). ``interpolation`` is how the
    patch grid is upsampled (``"nearest"`` shows the patches, ``"bilinear"`` smooths). ``masks`` (optional,
    boolean) is ``(B, h, w)`` — outlined on the image and the mean map — or ``(B, heads, h, w)`` — each head's
    mask outlined on that head's map. ``heads`` is ``"all"`` or a list of head indices.
    """
    rows = _take_rows(images, max_rows)
    maps = _to_numpy(attn).astype(np.float32)
    if maps.ndim != 4:
        raise ValueError(f"attention_figure: attn must be (B, heads, h, w), got {tuple(maps.shape)}")
    if maps.shape[0] < len(rows):
        raise ValueError(f"attention_figure: {maps.shape[0]} attention maps for {len(rows)} images")
    n_heads = maps.shape[1]
    head_ids = list(range(n_heads)) if isinstance(heads, str) else list(heads)  # [] draws the mean only
    if (isinstance(heads, str) and heads != "all"
            or any(not isinstance(h, (int, np.integer)) or not 0 <= h < n_heads for h in head_ids)):
        raise ValueError(f"attention_figure: heads={heads!r} is not 'all' or a list of head indices in "
                         f"0..{n_heads - 1}")
    mask_arr = None if masks is None else _to_numpy(masks).astype(bool)
    if mask_arr is not None and (mask_arr.ndim not in (3, 4) or mask_arr.shape[0] < len(rows)
                                 or mask_arr.ndim == 4 and mask_arr.shape[1] != n_heads):
        raise ValueError(f"attention_figure: masks must be (B, h, w) or (B, {n_heads}, h, w) booleans, "
                         f"got {tuple(mask_arr.shape)}")

    fig, axes = _panel_grid(len(rows), 2 + len(head_ids), title)
    for r, image in enumerate(rows):
        img = _image_hwc(image)
        height, width = img.shape[:2]
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the patch grid stretched over the image's pixels

        def outline(ax, mask: np.ndarray) -> None:
            mask_full = _resize_nearest(mask, (height, width)).astype(np.float32)
            if 0 < mask_full.sum() < mask_full.size:  # contour of a constant field is empty and warns
                ax.contour(mask_full, levels=[0.5], colors="cyan", linewidths=1.0)

        axes[r, 0].imshow(img)
        axes[r, 1].imshow(maps[r].mean(axis=0), extent=extent, interpolation=interpolation, cmap=cmap)
        if mask_arr is not None and mask_arr.ndim == 3:
            outline(axes[r, 0], mask_arr[r])
            outline(axes[r, 1], mask_arr[r])
        for c, head in enumerate(head_ids, start=2):
            axes[r, c].imshow(maps[r, head], extent=extent, interpolation=interpolation, cmap=cmap)
            if mask_arr is not None and mask_arr.ndim == 4:
                outline(axes[r, c], mask_arr[r, head])
    for c, name in enumerate(["image", "head mean", *(f"head {h}" for h in head_ids)]):
        axes[0, c].set_title(name)
    return fig


def mask_figure(images: Any, masks: Any, *, title: str, gt_masks: Any = None, max_images: int = 16,
                columns: int = 4, alpha: float = 0.5) -> Figure:
    """Saliency masks tinted over their images, one panel per image (``columns`` panels per row).

    ``masks`` is ``(B, H, W)`` boolean (resized to the image with nearest neighbour if smaller). With
    ``gt_masks`` ``(B, H, W)`` boolean, the ground-truth foreground is outlined and each panel's title gives the
    mask's IoU with it.
    """
    rows = _take_rows(images, max_images)
    pred = _as_batch(masks)
    gt = None if gt_masks is None else _as_batch(gt_masks)
    for name, batch in (("masks", pred), ("gt_masks", gt)):
        if batch is not None and len(batch) < len(rows):
            raise ValueError(f"mask_figure: {len(batch)} {name} for {len(rows)} images; pass one per image")
    n_cols = min(columns, len(rows))
    fig, axes = _panel_grid(math.ceil(len(rows) / n_cols), n_cols, title)
    tint = np.array([1.0, 0.2, 0.2], dtype=np.float32)
    for i, ax in enumerate(axes.flat):
        if i >= len(rows):
            fig.delaxes(ax)  # the last row's unused panels: one axes per image
            continue
        img = _image_hwc(rows[i])
        size = img.shape[:2]
        mask = _resize_nearest(_label_2d(pred[i], "mask").astype(bool), size)
        shown = img.copy()
        shown[mask] = (1.0 - alpha) * img[mask] + alpha * tint
        ax.imshow(shown)
        if gt is not None:
            gt_mask = _resize_nearest(_label_2d(gt[i], "ground-truth mask").astype(bool), size)
            if 0 < gt_mask.sum() < gt_mask.size:
                ax.contour(gt_mask.astype(np.float32), levels=[0.5], colors="lime", linewidths=1.0)
            iou = _binary_iou(mask, gt_mask)
            ax.set_title("IoU n/a (both empty)" if math.isnan(iou) else f"IoU {iou:.2f}", fontsize="small")
    return fig
