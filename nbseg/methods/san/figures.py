"""SAN's figures (static matplotlib, titled with what produced them): the semantic embeddings' attention maps
(SEAT's softmax over the N semantics, per pixel), segmentations beside the ground truth, and segmentations at
several training steps."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from nbseg import viz
from nbseg.io import save_figure
from nbseg.methods.san.evaluation import MODEL_LABEL


@torch.no_grad()
def semantic_attention(model, images: torch.Tensor, eval_semantics: str | None = None, max_rows: int = 4):
    """Per image: the image, the mean and each semantic embedding's attention ``softmax_N(Q Gamma^T / sqrt(P))``
    (Eq. 3's weights) over the pixels; images (B, 3, H, W) in [0, 1]."""
    mode = eval_semantics or model.cfg.eval_semantics
    attention = model.scores(images, mode).softmax(1)
    return viz.attention_figure(images, attention, max_rows=max_rows, interpolation="bilinear",
                                title=f"SAN: attention of each pixel to the N={attention.shape[1]} semantic "
                                      f"embeddings ('head j' = semantic j; zeta: {mode})\n{MODEL_LABEL}")


def segmentation_figure(evaluation, n: int = 6):
    """The first ``n`` evaluated images: SAN's segmentation and the ground truth of every label set."""
    split = evaluation.split
    columns = {"SAN": evaluation.preds[:n], **{f"ground truth ({k})": v[:n] for k, v in split.labels.items()}}
    return viz.segmentation_grid(split.images[:n], columns, max_rows=n,
                                 title=f"SAN on {evaluation.description['dataset']} "
                                       f"(zeta: {evaluation.description['eval_semantics']})\n{MODEL_LABEL}")


def training_figure(images: Sequence[torch.Tensor], by_step: Mapping[int, Sequence[torch.Tensor]], dataset: str):
    """Segmentations of the same images after each number of training steps (``{step: [(H, W) maps]}``)."""
    return viz.segmentation_grid(list(images), {f"step {s}": maps for s, maps in by_step.items()},
                                 max_rows=len(images), title=f"SAN during training on {dataset}\n{MODEL_LABEL}")


def evaluation_figures(evaluation, out_dir: str | Path) -> list[Path]:
    """``nbseg evaluate --figures DIR``: the segmentation grid."""
    return [save_figure(segmentation_figure(evaluation), Path(out_dir) / "san_segmentations.png")]


__all__ = ["semantic_attention", "segmentation_figure", "training_figure", "evaluation_figures"]
