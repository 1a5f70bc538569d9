"""TransFGU's figures (static matplotlib; every title names backbone, dataset and variant): crops grouped by concept,
Grad-CAM maps beside the attention, pseudo labels / student against the ground truth, and the student over rounds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from nbseg import viz
from nbseg.io import save_figure


def crop_concepts_figure(bank, concept_set, dataset, *, per_concept: int = 6, title: str) -> Figure:
    """One row per concept: up to ``per_concept`` of its crops (from the bank's images, resized to 48 px)."""
    from nbseg.methods.transfgu.bank import load_images

    labels = concept_set.crop_labels(bank)                                     # (N, W)
    fig = Figure(figsize=(1.3 * per_concept, 1.3 * concept_set.k + 0.6))
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(concept_set.k, per_concept, squeeze=False)
    cache: dict[int, torch.Tensor] = {}
    for k in range(concept_set.k):
        members = (labels == k).nonzero().tolist()[:per_concept]
        axes[k, 0].set_ylabel(f"{'thing' if k < concept_set.n_things else 'stuff'} {k}", fontsize=7)
        for j in range(per_concept):
            ax = axes[k, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(members):
                ax.axis("off")
                continue
            n, w = members[j]
            if n not in cache:
                cache[n] = load_images(dataset, n, n + 1, bank.size)[0]
            y, x, s = bank.windows[w].tolist()
            crop = cache[n][:, y:y + s, x:x + s]
            ax.imshow(F.interpolate(crop[None], size=(48, 48), mode="bilinear")[0].permute(1, 2, 0).clamp(0, 1))
    return fig


def gradcam_figure(images: torch.Tensor, attn: torch.Tensor, maps: torch.Tensor, *, title: str,
                   concepts=None, max_rows: int = 4) -> Figure:
    """Per image: the image, the head-mean CLS attention, then the Grad-CAM maps of ``concepts`` (default: the
    image's 3 strongest). images (B, 3, H, W), attn (B, heads, h, w), maps (B, K, h, w)."""
    rows = min(max_rows, len(images))
    n_maps = 3 if concepts is None else len(concepts)
    fig = Figure(figsize=(2.0 * (2 + n_maps), 2.0 * rows + 0.5))
    fig.suptitle(title, fontsize=8)
    axes = fig.subplots(rows, 2 + n_maps, squeeze=False)
    size = images.shape[-2:]
    for r in range(rows):
        picks = concepts if concepts is not None else maps[r].flatten(1).amax(1).topk(n_maps).indices.tolist()
        panels = [("image", images[r].permute(1, 2, 0).numpy(), None),
                  ("attention (head mean)", attn[r].mean(0), "inferno")]
        panels += [(f"concept {k}", maps[r, k], "viridis") for k in picks]
        for c, (name, panel, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if cmap is not None:
                panel = F.interpolate(panel[None, None].float(), size=size, mode="nearest")[0, 0].numpy()
            ax.imshow(panel, cmap=cmap)
            if r == 0:
                ax.set_title(name, fontsize=8)
    return fig


def rounds_figure(curve, refresh_epochs, *, title: str) -> Figure:
    """The student's val mIoU at every epoch end (``metrics.csv`` of ``--epoch-eval``); teacher refreshes marked."""
    fig = viz.curve_figure(np.asarray(curve["epoch"]) + 1, {"student val mIoU": np.asarray(curve["val_miou"])},
                           title=title, xlabel="epoch", ylabel="Hungarian mIoU")
    ax = fig.axes[0]
    for e in refresh_epochs:
        ax.axvline(e + 0.5, color="grey", linestyle=":", linewidth=1)
    return fig


def evaluation_figures(evaluation, out_dir, max_rows: int = 6) -> list[Path]:
    """``nbseg evaluate --figures DIR``: the student and the initial pseudo labels beside the ground truth."""
    out_dir = Path(out_dir)
    columns = {"ground truth": evaluation.gts, **{name: evaluation.predictions[key] for key, name in
                                                   (("pseudo_labels", "initial pseudo labels"),
                                                    ("student", "student")) if key in evaluation.predictions}}
    fig = viz.segmentation_grid(evaluation.images, columns, title=evaluation.title(), max_rows=max_rows)
    return [save_figure(fig, out_dir / "transfgu_segmentations.png")]


__all__ = ["crop_concepts_figure", "gradcam_figure", "rounds_figure", "evaluation_figures"]
