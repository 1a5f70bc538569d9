"""AlignSeg's tables and figures (paper Tables I, II, IV; Figs. 7-9) from an :class:`~nbseg.methods.alignseg.evaluation.
AlignSegEvaluation`, as DataFrames and static matplotlib figures for notebook ``10_alignseg``.

The paper's own numbers are data in :mod:`nbseg.methods.alignseg.paper` (``PAPER_TABLE_I``, ``PAPER_TABLE_II``), taken
from the paper's text (Liu et al., TPAMI 2024: PASCAL VOC 2012 / COCO-Stuff-27, DINO ViT-S/16), and every table that
shows them beside nbseg's labels which rows are the paper's and which backbone, weights and data produced the others.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from nbseg import viz
from nbseg.io import save_figure
from nbseg.methods.alignseg.evaluation import image_prototypes
from nbseg.methods.alignseg.paper import PAPER_SOURCE, PAPER_TABLE_I, PAPER_TABLE_II
from nbseg.probes import embed_2d, patch_labels
from nbseg.probes.prototypes import class_mean_embeddings, prototype_class_similarity
from nbseg.prototype_scores import prototype_cosine_maps, segment_by_argmax
from nbseg.train.logs import read_log


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------

# Which protocol each of the paper's Table I numbers used: AlignSeg's own rows are its released per-image
# many-to-one protocol (docs Sec. 3.6); the other rows are copied from their papers, which score dataset-level.
PAPER_PROTOCOL_ALIGNSEG = "per-image many-to-one (AlignSeg's released protocol)"
PAPER_PROTOCOL_OTHERS = "dataset-level (as reported by the cited paper)"


def paper_table_i():
    """The paper's Table I as a DataFrame (mIoU %), every row labelled as the paper's, with the protocol each
    number used (AlignSeg's 69.5 / 35.1: per-image many-to-one; the baselines: dataset-level)."""
    rows = []
    for method, encoder, frozen, evaluation, voc, coco in PAPER_TABLE_I:
        for dataset, value in (("PVOC val", voc), ("COCO-Stuff-27", coco)):
            if value is not None:
                protocol = PAPER_PROTOCOL_ALIGNSEG if method == "AlignSeg" else PAPER_PROTOCOL_OTHERS
                rows.append({"source": PAPER_SOURCE, "method": method, "encoder": encoder,
                             "frozen": {True: "yes", False: "no", None: "?"}[frozen], "evaluation": evaluation,
                             "dataset": dataset, "protocol": protocol, "averaging": "as reported",
                             "variant": "", "miou %": value})
    return pd.DataFrame(rows)


def table_i(evaluation) -> "object":
    """Table I: the paper's rows (labelled as the paper's, each with its protocol) and this evaluation's rows
    (labelled with the backbone, its weights, the dataset, the variant, the protocol, how the labels were made and
    how the mIoU averages; one row per method and protocol), long format, mIoU in %. Dataset-level rows use the
    STEGO averaging (a predicted class absent from the ground truth scores 0), as the papers beside them do."""
    d = evaluation.description
    ours = []
    for _, r in evaluation.table.iterrows():
        stego = r.get("miou_stego")
        dataset_level = stego is not None and not pd.isna(stego)
        ours.append({"source": f"nbseg, this run ({d['variant']} variant)", "method": r["method"],
                     "encoder": d["backbone"], "frozen": "yes", "evaluation": r["evaluation"],
                     "dataset": d["dataset"], "protocol": f"{r['protocol']} ({r['path']})",
                     "averaging": ("classes present or predicted (STEGO)" if dataset_level
                                   else "per image: classes present in it"),
                     "variant": d["variant"], "miou %": 100 * (stego if dataset_level else r["miou"])})
    return pd.concat([paper_table_i(), pd.DataFrame(ours)], ignore_index=True)


def table_i_wide(table) -> "object":
    """Table I pivoted like the paper: one row per (source, method, encoder, evaluation), one column per
    (dataset, protocol)."""
    return table.pivot_table(index=["source", "method", "encoder", "evaluation"], columns=["dataset", "protocol"],
                             values="miou %", aggfunc="first", sort=False)


def learnt_and_adapted_prototypes(method, features) -> dict[str, torch.Tensor]:
    """The prototypes Table IV can compare with the classes: ``"learnt P"`` (the decoder's K learnable queries, as
    the paper's Table IV) and ``"mean image-adapted P^x"`` (Eq. 1's output, L2-normalised and averaged over the
    images of ``features``; the vectors that actually segment, in the tokens' space)."""
    adapted = F.normalize(image_prototypes(method, features), dim=-1).mean(0)
    return {"learnt P": method.decoder.prototypes.detach().cpu().float(), "mean image-adapted P^x": adapted}


def table_iv(method, features, dataset, *, which: str = "mean image-adapted P^x", temperature: float = 0.1):
    """Table IV: the softmax over classes of the cosine between each prototype and each class's mean patch embedding
    (from the ground-truth masks of ``features``), one row per prototype.

    ``which``: ``"mean image-adapted P^x"`` (default) or ``"learnt P"`` (see :func:`learnt_and_adapted_prototypes`).
    ``temperature``: 0.1 by default, the released ``proto_similarity.py``'s x10 scaling of the cosines (at 1 the
    softmax over cosines in [-1, 1] is nearly flat). Uses :func:`nbseg.probes.prototypes.prototype_class_similarity`.
    """
    prototypes = learnt_and_adapted_prototypes(method, features)
    if which not in prototypes:
        raise ValueError(f"which must be one of {list(prototypes)}, got {which!r}")
    means = class_mean_embeddings(features, dataset.num_classes, dataset.ignore_index)
    names = [f"prototype {k + 1}" for k in range(method.cfg.n_prototypes)]
    return prototype_class_similarity(prototypes[which], means, dataset.class_names, temperature=temperature,
                                      prototype_names=names)


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------

def figure_title(evaluation, what: str) -> str:
    """``what`` followed by the variant, K, the backbone with its weights and the dataset."""
    d = evaluation.description
    return f"{what} · AlignSeg ({d['variant']}, K={d['K']}) · {d['backbone']} on {d['dataset']}"


def show_indices(evaluation, n: int, seed: int = 0) -> list[int]:
    """``n`` images to draw: those with the most ground-truth classes first (ties: dataset order), so the figures
    show scenes with something to segment."""
    labels = evaluation.features.labels
    counts = [len(set(torch.unique(lab).tolist()) - {evaluation.dataset.ignore_index}) for lab in labels]
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    return order[:n]


def prototype_masks(pred: torch.Tensor, k: int, ignore_index: int = 255) -> torch.Tensor:
    """Label maps (N, H, W) keeping only prototype ``k``'s pixels (others ``ignore_index``): one column of Fig. 8."""
    return torch.where(pred == k, pred, torch.full_like(pred, ignore_index))


def qualitative_figure(evaluation, indices, *, per_prototype: bool = True):
    """Images, ground truth, AlignSeg's segmentation and (``per_prototype``) the region of each prototype used in
    these images (Fig. 5 / 8): prototype ids are colours, not classes (no legend)."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    pred = evaluation.predictions[idx]
    columns = {"ground truth": evaluation.features.labels[idx], "AlignSeg": pred}
    if per_prototype:
        for k in torch.unique(pred).tolist():
            columns[f"proto {k + 1}"] = prototype_masks(pred, k)
    return viz.segmentation_grid(evaluation.features.images[idx], columns, max_rows=len(idx),
                                 title=figure_title(evaluation, "images / ground truth / prototypes"))


def kmeans_comparison_figure(evaluation, indices):
    """Fig. 9: AlignSeg beside per-image k-means (and dataset-level k-means) with the same K on the same features."""
    if evaluation.kmeans is None:
        raise ValueError("this evaluation has no k-means baselines: run evaluate_alignseg(..., kmeans=True)")
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    km = evaluation.kmeans
    columns = {"ground truth": evaluation.features.labels[idx], "AlignSeg": evaluation.predictions[idx],
               f"per-image k-means (K={km.k_per_image})": km.per_image[idx],
               f"dataset k-means (K={km.k_dataset})": km.dataset[idx]}
    return viz.segmentation_grid(evaluation.features.images[idx], columns, max_rows=len(idx),
                                 title=figure_title(evaluation, "Fig. 9: AlignSeg vs k-means"))


def tsne_points(method, features, index: int, n_classes: int, *, seed: int = 0, ignore_index: int = 255) -> dict:
    """Fig. 7 for one image: a joint t-SNE of its patch tokens and its K image-adapted prototypes.

    Returns ``{"patches": (N, 2), "prototypes": (K, 2), "gt": (N,) majority class of each patch (``ignore_index``
    where unlabelled), "assigned": (N,) prototype argmax of each patch}``."""
    patches = features.patches[index:index + 1]                              # (1, h, w, D)
    protos = method.image_prototypes(patches).cpu()                           # (1, K, D)
    assigned = segment_by_argmax(prototype_cosine_maps(patches, protos)).reshape(-1)    # (h*w,)
    gt = patch_labels(features.labels[index:index + 1], features.grid, n_classes, ignore_index).reshape(-1)
    x = torch.cat([patches.reshape(-1, patches.shape[-1]), protos[0]])
    xy = embed_2d(x, "tsne", seed=seed, perplexity=20.0)
    n = len(assigned)
    return {"patches": xy[:n], "prototypes": xy[n:], "gt": gt.numpy(), "assigned": assigned.numpy()}


def tsne_figure(method, evaluation, indices, *, seed: int = 0):
    """Fig. 7: per image, the t-SNE of its patch embeddings coloured by ground-truth class and by the prototype
    they are assigned to, with the K image-adapted prototypes drawn as stars (coloured by prototype id)."""
    ds = evaluation.dataset
    panels, stars = {}, []
    for i in indices:
        pts = tsne_points(method, evaluation.features, i, ds.num_classes, seed=seed, ignore_index=ds.ignore_index)
        image_id = evaluation.features.ids[i]
        panels[f"{image_id}: patches by ground-truth class"] = (pts["patches"], pts["gt"], ds.class_names)
        panels[f"{image_id}: by AlignSeg prototype (stars)"] = (pts["patches"], pts["assigned"])
        stars += [None, pts["prototypes"]]
    fig = viz.embedding_scatter(panels, title=figure_title(evaluation, "Fig. 7: t-SNE of patch embeddings and "
                                                                      "image-adapted prototypes"))
    palette = viz.label_palette(256) / 255.0
    for ax, xy in zip(fig.axes, stars):
        if xy is not None:
            ax.scatter(xy[:, 0], xy[:, 1], marker="*", s=220, c=palette[np.arange(len(xy))], edgecolors="black",
                       linewidths=0.8, zorder=3)
    return fig


def table_iv_figure(table, evaluation, which: str = "mean image-adapted P^x", temperature: float = 0.1):
    """Table IV as a heat map."""
    return viz.table_heatmap(table, title=figure_title(
        evaluation, f"Table IV: softmax_T={temperature:g}(cos({which}, class mean)) over classes"))


def training_curves(run_dir, evaluation) -> list:
    """The run's loss terms over the steps (``log.csv``) and, when it was scored at every epoch end
    (``metrics.csv``), AlignSeg's mIoU under both protocols over the steps."""
    run_dir = Path(run_dir)
    figures = []
    rows = read_log(run_dir / "log.csv")
    if rows:
        terms = [k for k in ("loss", "loss_proto", "loss_corr") if k in rows[0]]
        figures.append(viz.curve_figure([float(r["step"]) for r in rows],
                                        {k: [float(r[k]) for r in rows] for k in terms}, xlabel="step",
                                        ylabel="loss", title=figure_title(evaluation, "training losses")))
    scored = read_log(run_dir / "metrics.csv")
    if scored:
        figures.append(viz.curve_figure(
            [float(r["step"]) for r in scored],
            {f"{p} protocol": [100 * float(r[f"val_{p.replace('-', '_')}_miou"]) for r in scored]
             for p in ("hungarian", "per-image")},
            xlabel="step", ylabel="mIoU %", title=figure_title(evaluation, "mIoU at each epoch end")))
    return figures


def miou_bars(evaluation):
    """mIoU of AlignSeg and the k-means baselines under both protocols, as a grouped table for display (%)."""
    t = evaluation.table
    return (100 * t.pivot_table(index="method", columns="protocol", values="miou", sort=False)).round(2)


__all__ = ["PAPER_TABLE_I", "PAPER_TABLE_II", "paper_table_i", "table_i", "table_i_wide", "table_iv",
           "learnt_and_adapted_prototypes", "qualitative_figure", "kmeans_comparison_figure", "tsne_figure",
           "tsne_points", "table_iv_figure", "training_curves", "show_indices", "prototype_masks", "miou_bars",
           "figure_title"]


def evaluation_figures(evaluation, out_dir) -> list[Path]:
    """The figures an evaluation alone can draw (``nbseg evaluate --figures DIR``): mIoU bars, the qualitative grid
    (Figs. 5 / 8) and AlignSeg vs k-means (Fig. 9, when the baselines ran), as PNGs in ``out_dir``."""
    out_dir = Path(out_dir)
    show = show_indices(evaluation, 6)
    figures = {"miou_bars.png": miou_bars(evaluation), "qualitative.png": qualitative_figure(evaluation, show)}
    if evaluation.kmeans is not None:
        figures["fig9_kmeans.png"] = kmeans_comparison_figure(evaluation, show)
    return [save_figure(fig, out_dir / name) for name, fig in figures.items()]

