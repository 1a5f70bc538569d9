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


The pieces: :mod:`.colour` (palette, colourised labels, overlays), :mod:`.panels` (image-panel figures),
:mod:`.plots` (curves, heatmaps, scatters, histograms).
"""
from __future__ import annotations

from matplotlib.figure import Figure

from nbseg.viz.colour import IGNORE_COLOR, IGNORE_INDEX, colorize, label_palette, overlay
from nbseg.viz.panels import PANEL_INCHES, attention_figure, mask_figure, segmentation_grid
from nbseg.viz.plots import MAX_ANNOTATED_CELLS, curve_figure, embedding_scatter, histogram_figure, table_heatmap

__all__ = ["IGNORE_INDEX", "IGNORE_COLOR", "PANEL_INCHES", "MAX_ANNOTATED_CELLS", "label_palette", "colorize",
           "overlay", "segmentation_grid", "attention_figure", "mask_figure", "curve_figure", "table_heatmap",
           "embedding_scatter", "histogram_figure"]


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
