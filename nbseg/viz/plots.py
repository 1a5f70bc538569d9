"""Plots: training curves, table heatmaps, embedding scatters and histograms, each titled with what produced it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from pandas.api.types import is_numeric_dtype

from nbseg.viz.colour import IGNORE_INDEX, _to_numpy, label_palette
from nbseg.viz.panels import _legend_handles, _panel_grid

__all__ = ["curve_figure", "table_heatmap", "embedding_scatter", "histogram_figure"]

MAX_ANNOTATED_CELLS = 900   # table_heatmap writes the numbers only up to this many cells (30 x 30)


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
