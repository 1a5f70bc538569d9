"""DCN's figures from a :class:`~nbseg.methods.dcn.evaluation.DCNEvaluation`, drawn with :mod:`nbseg.viz`, and the
region explorer widget of notebook ``11_dcn``.

* :func:`show_indices` - images spread over the range of region counts (simple and complex scenes, as Fig. 4 picks).
* :func:`region_grid` - Fig. 4: image, DCN's regions, DCN + k-means semantic segmentation, ground truth.
* :func:`region_count_figure` / :func:`regions_vs_classes_figure` - the region-count analysis.
* :func:`retrieval` - Fig. 5: query regions and their nearest training regions.
* :func:`region_state` / :func:`region_explorer` - an image picker over the Fig. 4 grid (ipywidgets; ``.state`` holds
  what is shown, so it is testable without a browser).

Every title names the backbone, its weights and the dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nbseg import viz
from nbseg.io import save_figure
from nbseg.methods.dcn.regions import retrieval_figure
from nbseg.widgets import redraw_on_change, show_figure


def show_indices(evaluation, n: int = 6) -> list[int]:
    """``n`` evaluated images spread evenly over the sorted region counts (fewest to most regions)."""
    counts = evaluation.regions_per_image()
    order = sorted(range(len(counts)), key=lambda i: (int(counts[i]), i))
    n = min(n, len(order))
    if n <= 1:
        return order[:n]
    return [order[round(j * (len(order) - 1) / (n - 1))] for j in range(n)]


def region_grid(evaluation, indices: Sequence[int], *, seed_index: int = 0, title: str | None = None):
    """Fig. 4 for ``indices``: one row per image with DCN's regions (colours = cluster ids, meaningless across
    images), the k-means semantic segmentation of ``seeds[seed_index]`` (colours = matched classes) and the ground
    truth. The title lists each row's number of regions."""
    indices = list(indices)
    semantic = evaluation.semantic_maps(seed_index)
    counts = evaluation.regions_per_image()
    val = evaluation.val
    rows = ", ".join(str(int(counts[i])) for i in indices)
    title = title or (f"DCN regions (rows: {rows} regions; colour = cluster id) and DCN + k-means (seed "
                      f"{evaluation.seeds[seed_index]}; colour = class)\n{evaluation.title()}")
    return viz.segmentation_grid([val.images[i] for i in indices],
                                 {"DCN regions": [val.maps[i] for i in indices],
                                  "DCN + k-means": [semantic[i] for i in indices],
                                  "ground truth": [val.gt[i] for i in indices]},
                                 title=title, max_rows=len(indices), class_names=val.class_names)


def region_count_figure(evaluation):
    """Histograms of regions per image (all regions; regions of at least 1% of the image) beside ground-truth
    classes per image."""
    table = evaluation.region_counts()
    series = {"DCN regions": table["regions"], "DCN regions >= 1%": table["regions >= 1%"],
              "gt classes": table["gt classes"]}
    if "gt classes (full labels)" in table:
        series["gt classes (things + stuff)"] = table["gt classes (full labels)"]
    top = int(max(s.max() for s in series.values()))
    return viz.histogram_figure({"per image": series}, bins=top + 1, value_range=(-0.5, top + 0.5),
                                xlabel="count per image", title=f"regions per image\n{evaluation.title()}")


def regions_vs_classes_figure(evaluation):
    """Mean regions per image against the number of ground-truth classes in the image, one line per comparison of
    :meth:`~nbseg.methods.dcn.evaluation.DCNEvaluation.count_correlations`."""
    xs = sorted({int(k) for c in evaluation.counts.values() for k in c["mean_regions_by_gt_classes"]})
    ys = {f"{name} (Pearson {c['pearson']:.2f})": np.array([c["mean_regions_by_gt_classes"].get(x, np.nan)
                                                            for x in xs])
          for name, c in evaluation.counts.items()}
    return viz.curve_figure(xs, ys, xlabel="ground-truth classes in the image", ylabel="mean DCN regions",
                            title=f"regions vs classes per image\n{evaluation.title()}")


def retrieval(evaluation, *, k: int = 5, n_queries: int = 6, seed: int = 0):
    """Fig. 5: evaluated (query) regions and their ``k`` nearest regions of the k-NN gallery (cosine of region
    embeddings), labelled with their ground-truth majority class."""
    return retrieval_figure(evaluation.val.as_dict(), evaluation.gallery.as_dict(), k=k, n_queries=n_queries,
                            seed=seed, class_names=evaluation.val.class_names,
                            title=f"query regions and their {k} nearest training regions · {evaluation.title()}")


def region_state(evaluation, index: int) -> dict:
    """What the explorer shows for image ``index``: its id, region map, number of regions (all, foreground, at
    least 1%), the ground-truth classes present and each region's foreground score and flag."""
    r = evaluation.val.regions
    rows = torch.nonzero(r.image == index).flatten()
    table = evaluation.region_counts().iloc[index]
    return {"index": index, "id": evaluation.val.ids[index], "map": evaluation.val.maps[index],
            "regions": int(table["regions"]), "foreground_regions": int(table["foreground regions"]),
            "regions_1pct": int(table["regions >= 1%"]), "gt_classes": int(table["gt classes"]),
            "region_ids": r.region[rows].tolist(), "scores": r.score[rows].tolist(),
            "foreground": r.foreground[rows].tolist()}


def region_explorer(evaluation, *, seed_index: int = 0):
    """An image slider over the evaluated images redrawing the Fig. 4 row of the chosen image. Returns an
    ``ipywidgets.VBox`` whose ``.state`` (:func:`region_state`) follows the slider."""
    import ipywidgets as W

    image = W.IntSlider(value=0, min=0, max=evaluation.n_images - 1, description="image")
    out = W.Output()
    box = W.VBox([image, out])

    def redraw():
        box.state = s = region_state(evaluation, image.value)
        show_figure(out, region_grid(evaluation, [s["index"]], seed_index=seed_index,
                                    title=f"{s['id']}: {s['regions']} regions ({s['foreground_regions']} foreground), "
                                          f"{s['gt_classes']} gt classes · {evaluation.title()}"))

    redraw_on_change(box, (image,), redraw)
    redraw()
    return box


__all__ = ["show_indices", "region_grid", "region_count_figure", "regions_vs_classes_figure", "retrieval",
           "region_state", "region_explorer"]


def evaluation_figures(evaluation, out_dir) -> list[Path]:
    """The figures an evaluation alone can draw (``nbseg evaluate --figures DIR``): the region grid (Fig. 4), the
    region counts and regions against ground-truth classes, as PNGs in ``out_dir``."""
    out_dir = Path(out_dir)
    figures = {"region_grid.png": region_grid(evaluation, show_indices(evaluation)),
               "region_counts.png": region_count_figure(evaluation),
               "regions_vs_classes.png": regions_vs_classes_figure(evaluation)}
    return [save_figure(fig, out_dir / name) for name, fig in figures.items()]

