"""ipywidgets controls built by library functions (notebooks only display them when ``INTERACTIVE``).

Each control keeps its last computed state on the returned widget (``.state``), so tests can drive the sliders
without a browser and check what a user would see. The numbers behind each view come from a ``*_state`` function
(or :func:`nbseg.probes.prototypes.quality_view`) that tests can also call directly.

* :func:`saliency_explorer` - image picker, head selector, keep-the-mass threshold slider (notebook 01).
* :func:`consistency_explorer` - prototype source image, class, similarity threshold (notebook 02).
* :func:`quality_explorer` - target image, the two prototype classes and their source images, local crop (03).
* :func:`kmeans_explorer` - K slider and image picker: per-image vs dataset-level k-means (05).
"""
from __future__ import annotations

import torch

from nbseg import viz
from nbseg.cluster import upsample_labels
from nbseg.evaluation import evaluate
from nbseg.probes import FeatureSet, foreground_masks, kmeans_segmentation
from nbseg.probes.attention import best_per_image, threshold_sweep
from nbseg.probes.prototypes import (QualityCase, class_pixel_shares, consistency_view, quality_cases, quality_view,
                                     thing_classes)
from nbseg.saliency import keep_mass_mask, mask_iou, upsample_mask


def show_figure(out, fig) -> None:
    """Replace what the ``Output`` widget shows with ``fig``."""
    from IPython.display import display

    with out:
        out.clear_output(wait=True)
        display(fig)


def redraw_on_change(box, controls, redraw) -> None:
    """Redraw ``box`` when any control changes, unless ``box.holding`` (controls being set together)."""
    box.holding = False

    def changed(_):
        if not box.holding:
            redraw()

    for control in controls:
        control.observe(changed, names="value")


# ----------------------------------------------------------------------------------------------------------------
# 01: attention thresholds


def saliency_state(features: FeatureSet, index: int, head: str | int, fraction: float) -> dict:
    """The numbers behind one view of the saliency explorer: attention map, mask, IoU with the foreground, and the
    image's own best keep-the-mass fraction from the 5%-step sweep (None without labels)."""
    attn = features.attn[index]
    amap = attn.mean(0) if head == "mean" else attn[int(head)]
    mask = keep_mass_mask(amap, fraction)
    state = {"index": index, "head": head, "fraction": fraction, "attention": amap, "mask": mask, "iou": None,
             "best_fraction": None, "best_iou": None}
    if features.labels is not None:
        fg, valid = foreground_masks(features.labels[index:index + 1])
        full = upsample_mask(mask[None], features.image_size)
        state["iou"] = float(mask_iou(full, fg, valid)[0])
        best = best_per_image(threshold_sweep(amap[None], fg, valid)).iloc[0]
        state["best_fraction"], state["best_iou"] = float(best["threshold"]), float(best["iou"])
    return state


def saliency_explorer(features: FeatureSet):
    """Image picker, head selector and mass-threshold slider over the CLS attention of ``features``.

    Returns an ``ipywidgets.VBox`` with ``.state`` (see :func:`saliency_state`) updated on every change.
    """
    import ipywidgets as W

    n_heads = features.attn.shape[1]
    image = W.IntSlider(value=0, min=0, max=len(features.ids) - 1, description="image")
    head = W.Dropdown(options=["mean"] + list(range(n_heads)), value="mean", description="head")
    fraction = W.FloatSlider(value=0.6, min=0.05, max=1.0, step=0.05, description="keep mass")
    out = W.Output()
    box = W.VBox([W.HBox([image, head, fraction]), out])

    def redraw():
        box.state = s = saliency_state(features, image.value, head.value, fraction.value)
        score = "" if s["iou"] is None else f" · IoU {s['iou']:.2f} (best {s['best_iou']:.2f} at " \
                                             f"{s['best_fraction']:.0%})"
        show_figure(out, viz.mask_figure(features.images[image.value:image.value + 1],
                                        upsample_mask(s["mask"][None], features.image_size),
                                        title=f"{features.ids[image.value]} head {head.value} {fraction.value:.0%} mass"
                                              f"{score} · {features.title()}"))

    redraw_on_change(box, (image, head, fraction), redraw)
    redraw()
    return box


# ----------------------------------------------------------------------------------------------------------------
# 02: semantic consistency


def consistency_explorer(features: FeatureSet, n_classes: int, class_names, *, rule: str = "mass",
                         fraction: float = 0.6, min_share: float = 0.01, n_show: int = 8):
    """Source-image picker, class selector (the classes of the source image) and threshold slider: how the source's
    prototype segments its class in the other images (AlignSeg Fig. 2). ``.state``:
    :func:`nbseg.probes.prototypes.consistency_view`."""
    import ipywidgets as W

    shares = class_pixel_shares(features.labels, n_classes)
    allowed = thing_classes(list(class_names))

    def options(index):
        return [(class_names[c], c) for c in allowed if shares[index, c] >= min_share] or \
               [(class_names[c], c) for c in allowed if shares[index, c] > 0]

    first = next((i for i in range(len(features.ids)) if options(i)), 0)
    source = W.IntSlider(value=first, min=0, max=len(features.ids) - 1, description="source")
    klass = W.Dropdown(options=options(first), description="class")
    start, stop = (0.05, 1.0) if rule == "mass" else (0.0, 0.95)
    threshold = W.FloatSlider(value=0.6 if rule == "mass" else 0.5, min=start, max=stop, step=0.05,
                              description="threshold")
    out = W.Output()
    box = W.VBox([W.HBox([source, klass, threshold]), out])

    def redraw():
        if klass.value is None:
            box.state = {"source": source.value, "class": None, "iou": None}
            with out:
                out.clear_output()
                print(f"image {source.value} shows none of the classes {allowed}; pick another source")
            return
        box.state = s = consistency_view(features, source.value, klass.value, threshold.value, n_classes,
                                          rule=rule, fraction=fraction, min_share=min_share, n_show=n_show)
        fg = features.labels[s["shown"]] == klass.value
        show_figure(out, viz.mask_figure(features.images[s["shown"]], s["masks"], gt_masks=fg,
                                        title=f"prototype of image {source.value} ({class_names[klass.value]}) · "
                                              f"{rule} threshold {threshold.value:.2f} · mean IoU {s['iou']:.2f} over "
                                              f"{len(s['targets'])} images · {features.title()}"))

    def source_changed(_):
        box.holding = True
        klass.options = options(source.value)
        klass.value = klass.options[0][1] if klass.options else None
        box.holding = False
        redraw()

    redraw_on_change(box, (klass, threshold), redraw)
    source.observe(source_changed, names="value")
    redraw()
    return box


# ----------------------------------------------------------------------------------------------------------------
# 03: semantic quality


def quality_explorer(backbone, features: FeatureSet, n_classes: int, class_names, *, fraction: float = 0.6,
                     min_share: float = 0.02):
    """Target image, the two prototype classes with their source images, and a crop (top, left, size): the global
    view and the crop re-segmented at full input size (AlignSeg Fig. 3). ``.state``:
    :func:`nbseg.probes.prototypes.quality_view`."""
    import ipywidgets as W

    H, W_ = features.image_size
    shares = class_pixel_shares(features.labels, n_classes)
    allowed = thing_classes(list(class_names))
    cases = quality_cases(features.labels, n_classes, min_share=min_share)
    if not cases:
        raise ValueError("no image holds two non-background classes; the quality explorer needs one")
    names = [(class_names[c], c) for c in allowed]
    n = len(features.ids) - 1
    target = W.IntSlider(value=cases[0].target, min=0, max=n, description="target")
    class_a = W.Dropdown(options=names, value=cases[0].classes[0], description="class A")
    class_b = W.Dropdown(options=names, value=cases[0].classes[1], description="class B")
    source_a = W.IntSlider(value=cases[0].sources[0], min=0, max=n, description="source A")
    source_b = W.IntSlider(value=cases[0].sources[1], min=0, max=n, description="source B")
    size = W.IntSlider(value=H // 2, min=max(8, H // 8), max=H, step=8, description="crop size")
    top = W.IntSlider(value=0, min=0, max=H - size.value, description="crop top")
    left = W.IntSlider(value=0, min=0, max=W_ - size.value, description="crop left")
    out = W.Output()
    box = W.VBox([W.HBox([target, class_a, class_b]), W.HBox([source_a, source_b]), W.HBox([size, top, left]), out])

    def best_source(c):
        order = shares[:, c].argsort(descending=True).tolist()
        return next(i for i in order if i != target.value)

    def redraw():
        side = min(size.value, H, W_)
        t, l = min(top.value, H - side), min(left.value, W_ - side)
        case = QualityCase(target.value, (class_a.value, class_b.value), (source_a.value, source_b.value),
                           source_a.value)
        box.state = s = quality_view(backbone, features, case, (t, l, side, side), n_classes, fraction=fraction)
        crop = s["crop_image"]
        fig = viz.segmentation_grid(
            [features.images[target.value], crop, crop],
            {"ground truth": [s["gt"], s["crop_gt"], s["crop_gt"]],
             "prototype argmax": [s["global_pred"], s["local_pred"], s["global_pred"][t:t + side, l:l + side]]},
            class_names=class_names,
            title=f"image {target.value}: global view; crop re-segmented at full size (mIoU "
                  f"{s['miou_local_crop']:.2f}); global view cropped (mIoU {s['miou_global_crop']:.2f}) · "
                  f"{features.title()}")
        show_figure(out, fig)

    def classes_changed(_):
        box.holding = True
        source_a.value, source_b.value = best_source(class_a.value), best_source(class_b.value)
        box.holding = False
        redraw()

    def size_changed(_):
        box.holding = True
        top.max, left.max = H - size.value, W_ - size.value
        box.holding = False
        redraw()

    redraw_on_change(box, (target, source_a, source_b, top, left), redraw)
    class_a.observe(classes_changed, names="value")
    class_b.observe(classes_changed, names="value")
    size.observe(size_changed, names="value")
    redraw()
    return box


# ----------------------------------------------------------------------------------------------------------------
# 05: per-image vs dataset-level k-means


def kmeans_state(features: FeatureSet, index: int, k: int, n_classes: int, dataset_labels: torch.Tensor, *,
                 seed: int = 0) -> dict:
    """Image ``index`` clustered alone with K clusters beside its part of the dataset-level clustering
    ``dataset_labels`` ((N, H, W) cluster ids); each scored on this image with the per-image protocol."""
    alone = kmeans_segmentation(features.patches[index:index + 1], k, scope="image", seed=seed)
    alone = upsample_labels(alone, features.image_size)[0]
    whole = dataset_labels[index]
    gt = [features.labels[index]]
    score = {name: evaluate([pred], gt, n_clusters=k, n_classes=n_classes, protocol="per-image").miou
             for name, pred in (("per_image", alone), ("dataset", whole))}
    return {"index": index, "k": k, "per_image": alone, "dataset": whole, "miou_per_image": score["per_image"],
            "miou_dataset": score["dataset"]}


def kmeans_explorer(features: FeatureSet, n_classes: int, *, k: int = 5, k_max: int = 16, seed: int = 0):
    """K slider and image picker: the image clustered alone and its part of one clustering of the whole set (cached
    per K), side by side with the ground truth. ``.state``: :func:`kmeans_state`."""
    import ipywidgets as W

    cache: dict[int, torch.Tensor] = {}
    slider = W.IntSlider(value=k, min=2, max=k_max, description="K")
    image = W.IntSlider(value=0, min=0, max=len(features.ids) - 1, description="image")
    out = W.Output()
    box = W.VBox([W.HBox([slider, image]), out])

    def redraw():
        if slider.value not in cache:
            cache[slider.value] = kmeans_segmentation(features.patches, slider.value, scope="dataset",
                                                      size=features.image_size, seed=seed)
        box.state = s = kmeans_state(features, image.value, slider.value, n_classes, cache[slider.value], seed=seed)
        i = image.value
        show_figure(out, viz.segmentation_grid(
            features.images[i:i + 1], {"ground truth": features.labels[i:i + 1], "per-image k-means":
                                       s["per_image"][None], "dataset k-means": s["dataset"][None]},
            title=f"image {i}, K={slider.value} · per-image protocol mIoU: alone {s['miou_per_image']:.2f}, "
                  f"dataset {s['miou_dataset']:.2f} · {features.title()}"))

    redraw_on_change(box, (slider, image), redraw)
    redraw()
    return box
