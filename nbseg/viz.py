"""Static figures for notebooks and reports: label maps, overlays, attention maps, saliency masks, curves, tables.

Every drawing function returns a :class:`matplotlib.figure.Figure` built with the object API (``Figure``, not
``pyplot.subplots``): pyplot's figure registry is never touched, so a figure is not shown twice in a notebook
(once by the inline backend, once as the cell's value), nothing leaks in long loops, and everything works under
the Agg backend in CI. Save figures with :func:`nbseg.io.save_figure`; never ``plt.show()``.

Every figure takes a mandatory ``title``: callers put the backbone, the weights and the dataset in it
(``"embedded (sha 1a2b..) on world/val"``) so that no figure leaves the notebook without saying what produced it.

Inputs may be torch tensors or numpy arrays. Images are ``(3, H, W)`` float in [0, 1] (the tensor layout) or
``(H, W, 3)`` uint8 / float arrays; label maps are ``(H, W)`` integers with ``ignore_index`` (255) for unlabelled
pixels; masks are ``(H, W)`` booleans.

Length: over 400 lines of small, independent figure functions (one per figure kind the notebooks draw).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from nbseg.world import voc_palette

IGNORE_INDEX = 255
# Ignored pixels are drawn white: VOC's colour 0 (background) is black, so white cannot be confused with a class.
IGNORE_COLOR = np.array([255, 255, 255], dtype=np.uint8)
PANEL_INCHES = 2.2          # edge of one image panel
MAX_ANNOTATED_CELLS = 900   # table_heatmap writes the numbers only up to this many cells (30 x 30)

__all__ = ["label_palette", "colorize", "overlay", "segmentation_grid", "attention_figure", "mask_figure",
           "curve_figure", "table_heatmap", "embedding_scatter", "histogram_figure"]


# ----------------------------------------------------------------------------------------------------------------
# notebook display


def _enable_notebook_display() -> None:
    """Let a Figure returned as a cell's value display as a PNG inside IPython / Jupyter.

    The inline backend registers that formatter only once pyplot draws its first figure, which never happens here:
    these figures bypass pyplot. A format the user chose (``%config InlineBackend.figure_formats``) is kept.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    formatters = shell.display_formatter.formatters
    for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf"):
        try:
            formatters[mime].lookup_by_type(Figure)
            return  # some figure format is already registered
        except KeyError:
            continue
    select_figure_formats(shell, {"png"}, bbox_inches="tight")


_enable_notebook_display()


# ----------------------------------------------------------------------------------------------------------------
# array helpers


def _to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (detached, moved to the CPU) or anything ``np.asarray`` takes, as a numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch for numpy callers
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _as_batch(items: Any) -> list[np.ndarray]:
    """A batch given as a stacked tensor / array (first axis = batch) or as a sequence, as a list of arrays."""
    if hasattr(items, "detach") or isinstance(items, np.ndarray):
        return list(_to_numpy(items))
    return [_to_numpy(item) for item in items]


def _image_hwc(image: Any) -> np.ndarray:
    """An image as an ``(H, W, 3)`` float array in [0, 1], from ``(3, H, W)``, ``(H, W, 3)`` or ``(H, W)``."""
    img = _to_numpy(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    elif img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W), (H, W, 3) or (H, W), got {tuple(img.shape)}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    # Normalised tensors (ImageNet mean / std) fall slightly outside [0, 1]; clipping keeps imshow from warning.
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def _label_2d(label: Any, name: str = "label map") -> np.ndarray:
    """A label map or mask as a 2-D array; a leading axis of size 1 (``(1, H, W)``) is dropped."""
    arr = _to_numpy(label)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a {name} of shape (H, W), got {tuple(arr.shape)}")
    return arr


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of ``array`` to ``size = (H, W)`` (up or down)."""
    h, w = array.shape[:2]
    height, width = size
    if (h, w) == (height, width):
        return array
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    return array[rows][:, cols]


def _binary_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty (nothing to agree on)."""
    union = np.logical_or(pred, target).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(pred, target).sum() / union)


# ----------------------------------------------------------------------------------------------------------------
# colours


def label_palette(n: int) -> np.ndarray:
    """The first ``n`` colours of the PASCAL VOC colour map as an ``(n, 3)`` uint8 array (row i = class i)."""
    if not 0 <= n <= 256:
        raise ValueError(f"label_palette(n={n}): the VOC colour map has 256 colours; ask for 0..256")
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)[:n].copy()


def colorize(label: Any, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Colour a label map ``(H, W)`` int with the VOC colours; ``ignore_index`` pixels are white.

    Returns an ``(H, W, 3)`` uint8 image. Labels must lie in 0..255 (the VOC colour map's range).
    """
    lab = _label_2d(label).astype(np.int64)
    valid = np.ones(lab.shape, dtype=bool) if ignore_index is None else lab != ignore_index
    if valid.any():
        low, high = int(lab[valid].min()), int(lab[valid].max())
        if low < 0 or high > 255:
            raise ValueError(f"colorize: labels must lie in 0..255 (besides ignore_index={ignore_index}), "
                             f"got values from {low} to {high}; remap the labels or pass ignore_index")
    out = np.empty(lab.shape + (3,), dtype=np.uint8)
    out[valid] = label_palette(256)[lab[valid]]
    out[~valid] = IGNORE_COLOR
    return out


def overlay(image: Any, label: Any, alpha: float = 0.5, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Blend the colours of ``label`` over ``image``; returns an ``(H, W, 3)`` float array in [0, 1].

    ``label`` (h, w) is resized to the image with nearest neighbour when its size differs (a patch-level map
    over a full-size image). Ignored pixels keep the plain image, so unlabelled regions stay visible.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must lie in [0, 1], got {alpha}")
    img = _image_hwc(image)
    lab = _resize_nearest(_label_2d(label), img.shape[:2])
    colours = colorize(lab, ignore_index).astype(np.float32) / 255.0
    out = (1.0 - alpha) * img + alpha * colours
    if ignore_index is not None:
        ignored = lab == ignore_index
        out[ignored] = img[ignored]
    return out


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


def curve_figure(x: Any, ys: Mapping[str, Any], *, title: str, xlabel: str, ylabel: str,
                 logy: bool = False) -> Figure:
    """One line per named series over a shared ``x`` (loss curves, IoU-vs-threshold curves), with a legend.

    ``x`` may be ``None`` for 0, 1, 2, ... (steps).
    """
    if not ys:
        raise ValueError("curve_figure: no series given in ys")
    series = {name: _to_numpy(y).astype(np.float64).ravel() for name, y in ys.items()}
    xs = None if x is None else _to_numpy(x).astype(np.float64).ravel()
    fig, axes = _panel_grid(1, 1, title)
    ax = axes[0, 0]
    ax.set_axis_on()
    fig.set_size_inches(6.0, 4.0)
    for name, y in series.items():
        if xs is not None and len(y) != len(xs):
            raise ValueError(f"curve_figure: series {name!r} has {len(y)} values for {len(xs)} x values")
        ax.plot(np.arange(len(y)) if xs is None else xs, y, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def table_heatmap(df: Any, *, title: str, fmt: str = ".2f", cmap: str = "viridis") -> Figure:
    """A numeric table (prototype similarities, a confusion matrix) as a heat map with a colour bar.

    Row and column labels come from the DataFrame's index and columns; each cell carries its value formatted
    with ``fmt`` while the table is small enough to read (at most 30 x 30 cells). NaN cells stay blank.
    """
    from pandas.api.types import is_numeric_dtype

    non_numeric = [column for column in df.columns if not is_numeric_dtype(df[column])]
    if non_numeric:
        raise ValueError(f"table_heatmap: columns {non_numeric} are not numeric; drop them or convert them "
                         "first (df.astype(float))")
    values = df.to_numpy(dtype=np.float64)
    n_rows, n_cols = values.shape
    fig, axes = _panel_grid(1, 1, title)
    ax = axes[0, 0]
    ax.set_axis_on()
    fig.set_size_inches(max(4.0, 0.6 * n_cols + 2.5), max(3.0, 0.45 * n_rows + 1.5))
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(n_cols), [str(c) for c in df.columns], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n_rows), [str(i) for i in df.index])
    if df.columns.name:
        ax.set_xlabel(str(df.columns.name))
    if df.index.name:
        ax.set_ylabel(str(df.index.name))
    if values.size <= MAX_ANNOTATED_CELLS:
        colours = image.cmap(image.norm(values))
        for (r, c), value in np.ndenumerate(values):
            if np.isnan(value):
                continue
            luminance = colours[r, c, :3] @ np.array([0.299, 0.587, 0.114])  # dark text on light cells
            ax.text(c, r, format(value, fmt), ha="center", va="center", fontsize="small",
                    color="black" if luminance > 0.5 else "white")
    return fig


def _plot_panels(n: int, title: str, inches: tuple[float, float] = (4.2, 3.6)) -> tuple[Figure, np.ndarray]:
    """A titled row of ``n`` plot panels (axes on), as a flat array of axes."""
    fig, axes = _panel_grid(1, n, title)
    fig.set_size_inches(inches[0] * n, inches[1])
    for ax in axes.flat:
        ax.set_axis_on()
    return fig, axes[0]


def embedding_scatter(panels: Mapping[str, tuple], *, title: str, point_size: float = 4.0,
                      ignore_index: int | None = IGNORE_INDEX) -> Figure:
    """2-D embeddings (t-SNE, PCA) as scatter plots, one panel per entry, points coloured with the VOC colours of
    their labels (ground-truth classes or cluster ids).

    ``panels`` maps a panel title to ``(points (M, 2), labels (M,))`` or ``(points, labels, names)``; with ``names``
    (a list indexed by label, or a dict) the panel gets a legend of the labels that appear. Points labelled
    ``ignore_index`` are drawn light grey.
    """
    if not panels:
        raise ValueError("embedding_scatter: no panels given")
    fig, axes = _plot_panels(len(panels), title, (4.0, 4.0))
    palette = label_palette(256) / 255.0
    for ax, (name, panel) in zip(axes, panels.items()):
        points, labels, label_names = (*panel, None) if len(panel) == 2 else panel
        xy = _to_numpy(points).astype(np.float64)
        lab = _to_numpy(labels).astype(np.int64).ravel()
        if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(lab):
            raise ValueError(f"embedding_scatter: panel {name!r} needs points (M, 2) and labels (M,), got "
                             f"{xy.shape} and {lab.shape}")
        ignored = lab == ignore_index if ignore_index is not None else np.zeros(len(lab), bool)
        if lab[~ignored].size and (lab[~ignored].min() < 0 or lab[~ignored].max() > 255):
            raise ValueError(f"embedding_scatter: labels of panel {name!r} must lie in 0..255")
        colours = np.where(ignored[:, None], 0.8, palette[np.where(ignored, 0, lab)])
        ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=point_size, linewidths=0)
        ax.set_title(name, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        if label_names is not None:
            ax.legend(handles=_legend_handles(np.unique(lab[~ignored]), label_names), fontsize="x-small",
                      loc="best", framealpha=0.7)
    return fig


def histogram_figure(panels: Mapping[str, Mapping[str, Any]], *, title: str, xlabel: str, bins: int = 36,
                     value_range: tuple[float, float] | None = None) -> Figure:
    """Overlaid density histograms, one panel per entry (angles within images vs over the dataset, ...).

    ``panels`` maps a panel title to ``{series name: values}``; a value may be ``(values, weights)`` for weighted
    samples (pixel shares). Empty series are listed in the legend as empty.
    """
    if not panels:
        raise ValueError("histogram_figure: no panels given")
    fig, axes = _plot_panels(len(panels), title)
    for ax, (name, series) in zip(axes, panels.items()):
        for label, sample in series.items():
            values, weights = sample if isinstance(sample, tuple) else (sample, None)
            v = _to_numpy(values).astype(np.float64).ravel()
            w = None if weights is None else _to_numpy(weights).astype(np.float64).ravel()
            if v.size == 0:
                ax.plot([], [], label=f"{label} (empty)")
                continue
            ax.hist(v, bins=bins, range=value_range, weights=w, density=True, histtype="step", linewidth=1.5,
                    label=label)
        ax.set_title(name, fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return fig
