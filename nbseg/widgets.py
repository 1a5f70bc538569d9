"""ipywidgets controls built by library functions (notebooks only display them when ``INTERACTIVE``).

Each control keeps its last computed state on the returned widget (``.state``), so tests can drive the sliders
without a browser and check what a user would see.
"""
from __future__ import annotations

from nbseg.probes import FeatureSet, foreground_masks
from nbseg.saliency import keep_mass_mask, mask_iou, upsample_mask


def saliency_state(features: FeatureSet, index: int, head: str | int, fraction: float) -> dict:
    """The numbers behind one view of the saliency explorer: attention map, mask and IoU with the foreground."""
    attn = features.attn[index]
    amap = attn.mean(0) if head == "mean" else attn[int(head)]
    mask = keep_mass_mask(amap, fraction)
    state = {"index": index, "head": head, "fraction": fraction, "attention": amap, "mask": mask, "iou": None}
    if features.labels is not None:
        fg, valid = foreground_masks(features.labels[index:index + 1])
        full = upsample_mask(mask[None], features.image_size)
        state["iou"] = float(mask_iou(full, fg, valid)[0])
    return state


def saliency_explorer(features: FeatureSet):
    """Image picker, head selector and mass-threshold slider over the CLS attention of ``features``.

    Returns an ``ipywidgets.VBox`` with ``.state`` (see :func:`saliency_state`) updated on every change.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from nbseg import viz

    n_heads = features.attn.shape[1]
    image = W.IntSlider(value=0, min=0, max=len(features.ids) - 1, description="image")
    head = W.Dropdown(options=["mean"] + list(range(n_heads)), value="mean", description="head")
    fraction = W.FloatSlider(value=0.6, min=0.05, max=1.0, step=0.05, description="keep mass")
    out = W.Output()
    box = W.VBox([W.HBox([image, head, fraction]), out])

    def redraw(_=None):
        box.state = saliency_state(features, image.value, head.value, fraction.value)
        with out:
            out.clear_output(wait=True)
            iou = "" if box.state["iou"] is None else f" · IoU {box.state['iou']:.2f}"
            fig = viz.mask_figure(features.images[image.value:image.value + 1],
                                  upsample_mask(box.state["mask"][None], features.image_size),
                                  title=f"{features.ids[image.value]} head {head.value} "
                                        f"{fraction.value:.0%} mass{iou} · {features.title()}")
            from IPython.display import display

            display(fig)
            plt.close("all")

    for w in (image, head, fraction):
        w.observe(redraw, names="value")
    redraw()
    return box
