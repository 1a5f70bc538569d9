"""Zero-shot segmentation by class name (PGSeg Sec. 5.1 "Training and Inference Settings"; docs 6.4), as pure
tensor functions.

1. :func:`final_assignment` - ``A_final = A_1 A_2``: the *soft* assignment maps of both stages multiplied, patches
   -> stage-2 groups.
2. :func:`group_class_affinity` - group -> class ``softmax_K(s * cos(group embedding, prompt embedding))``,
   optionally restricted to the image's top-k classes (masked softmax times the unrestricted one).
3. :func:`pixel_groups` - the assignment upsampled bilinearly to the image and argmaxed: one stage-2 group per
   pixel (B, H, W).
4. :func:`labels_with_background` - each pixel takes its group's best class (the group -> class affinity is
   argmaxed once per group and gathered to the pixels); with a background class 0 where that class's affinity is
   below ``min(threshold, the image's largest affinity)``; the threshold is chosen on *train* images
   (:func:`choose_background_threshold`), never on val. :func:`class_scores` spells the dense per-pixel class
   scores (B, K, H, W) out, for display; the labels never build them (the zero-shot throughput, docs 6.4).

Also the Fig. 5/6 measures: :func:`compactness` and :func:`richness`; and :func:`group_usage`, the groups that
own pixels (a collapse check).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nbseg.evaluation.metrics import confusion_matrix, scores_from_confusion

CAPTION_TEMPLATE = "a picture of a {}"        # the world captions' own phrasing ("a picture of ... with ...")
PAPER_TEMPLATE = "a photo of a {}."           # the paper's template (GroupViT / CLIP "simple")


def final_assignment(soft_stage1: torch.Tensor, soft_stage2: torch.Tensor) -> torch.Tensor:
    """``A_final = A_1 A_2``: soft_stage1 (B, G1, N) patches -> stage-1 groups, soft_stage2 (B, G2, G1) ->
    (B, G2, N), the soft assignment of every patch to a stage-2 group."""
    return soft_stage2 @ soft_stage1


def group_class_affinity(groups: torch.Tensor, classes: torch.Tensor, scale: float | torch.Tensor,
                         image: torch.Tensor | None = None, topk: int = 0) -> torch.Tensor:
    """groups (B, G, E), classes (K, E) prompt embeddings -> (B, G, K) ``softmax_K(s cos(g, t_k))``.

    ``topk`` > 0 (with ``image`` (B, E), the image embedding): the softmax restricted to the image's top-k classes
    by ``cos(image, t_k)``, multiplied by the unrestricted softmax (docs 6.4)."""
    logits = scale * F.normalize(groups, dim=-1) @ F.normalize(classes, dim=-1).t()
    affinity = logits.softmax(-1)
    if topk and image is not None and topk < classes.shape[0]:
        image_logits = F.normalize(image, dim=-1) @ F.normalize(classes, dim=-1).t()          # (B, K)
        keep = torch.zeros_like(image_logits, dtype=torch.bool).scatter_(
            1, image_logits.topk(topk, dim=1).indices, True)
        restricted = logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(-1)
        affinity = restricted * affinity
    return affinity


def pixel_groups(assignment: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """assignment (B, G, h*w) -> (B, H, W) int64: the assignment resized bilinearly to ``size``, each pixel given
    to its most likely group (the first on ties)."""
    maps = F.interpolate(assignment.reshape(assignment.shape[0], -1, *grid), size=size, mode="bilinear",
                         align_corners=False)
    # max(1).indices, not argmax(1): the same first-maximum index, but argmax over a non-innermost axis is the
    # slowest step of zero-shot inference on CPU (several times the bilinear resize)
    return maps.max(1).indices


def _gather_groups(per_group: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """per_group (B, G, ...) values of each group, groups (B, H, W) pixel -> group -> (B, H, W, ...)."""
    B, H, W = groups.shape
    flat = groups.reshape(B, H * W, *([1] * (per_group.dim() - 2))).expand(-1, -1, *per_group.shape[2:])
    return per_group.gather(1, flat).reshape(B, H, W, *per_group.shape[2:])


def class_scores(groups: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """groups (B, H, W) pixel -> group, affinity (B, G, K) -> (B, K, H, W): each pixel scored with its group's
    class affinities (``one_hot(group) @ affinity``)."""
    return _gather_groups(affinity, groups).permute(0, 3, 1, 2)


def labels_with_background(groups: torch.Tensor, affinity: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """groups (B, H, W) pixel -> group, affinity (B, G, K) -> (B, H, W) int64: the argmax of
    :func:`class_scores` over K, computed per group (B, G) and gathered to the pixels. ``threshold`` None: the
    class (0..K-1). Else 0 is the background and classes are 1..K; a pixel is background when its best score is
    below ``min(threshold, max affinity of its image)`` (docs 6.4; GroupViT's rule)."""
    best, label = affinity.max(-1)                                                        # (B, G)
    label = _gather_groups(label, groups)
    if threshold is None:
        return label
    bar = torch.minimum(torch.full_like(affinity[:, 0, 0], float(threshold)), affinity.flatten(1).amax(1))
    return torch.where(_gather_groups(best, groups) < bar[:, None, None], torch.zeros_like(label), label + 1)


def identity_scores(preds: Sequence[torch.Tensor], gts: Sequence[torch.Tensor], class_names: list[str],
                    ignore_index: int = 255):
    """Zero-shot needs no matching: predicted class k is class k. One confusion matrix over the split ->
    :class:`nbseg.evaluation.metrics.EvalResult` (mIoU over the classes present)."""
    n = len(class_names)
    confusion = sum(confusion_matrix(p, g, n, n, ignore_index=ignore_index) for p, g in zip(preds, gts))
    return scores_from_confusion(confusion, np.arange(n), class_names, protocol="identity (zero-shot)",
                                 n_images=len(preds), ignore_index=ignore_index)


def choose_background_threshold(groups: Sequence[torch.Tensor], affinities: Sequence[torch.Tensor],
                                gts: Sequence[torch.Tensor], class_names: list[str],
                                candidates: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
                                ) -> tuple[float, dict[float, float]]:
    """The background threshold maximising mIoU (identity mapping, ``class_names`` with background first) on the
    given images' pixel groups (:func:`pixel_groups`) and affinities - pass *train* images. Returns (threshold,
    {threshold: mIoU})."""
    table = {}
    for t in candidates:
        preds = [labels_with_background(g, a, float(t)) for g, a in zip(groups, affinities)]
        table[float(t)] = identity_scores(preds, gts, class_names).miou
    best = max(table, key=lambda t: (table[t], -t))
    return best, table


def compactness(tokens: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Fig. 5 as a number: tokens (B, N, D) clustered by assignment (B, G, N) -> (B,) mean cosine similarity of
    each token to the mean of the tokens of its (argmax) group. Higher: tighter clusters."""
    hard = F.one_hot(assignment.argmax(1), assignment.shape[1]).to(tokens.dtype)           # (B, N, G)
    tokens = F.normalize(tokens, dim=-1)
    centres = F.normalize(hard.transpose(1, 2) @ tokens, dim=-1)                             # (B, G, D)
    return (tokens * (hard @ centres)).sum(-1).mean(1)


def group_usage(groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether the segmentation collapses: groups (B, H, W) pixel -> stage-2 group (:func:`pixel_groups`) ->
    ((B,) how many of the ``n_groups`` groups own at least one pixel, (B,) the largest group's share of the
    pixels). One group owning every pixel makes the image one class, whatever the prompts."""
    counts = F.one_hot(groups.flatten(1), n_groups).sum(1)                                   # (B, G)
    return (counts > 0).sum(1), counts.amax(1) / groups[0].numel()


def richness(group_tokens: torch.Tensor) -> float:
    """Fig. 6 as a number: group_tokens (S, G, D) of S images -> the mean over groups and dimensions of the
    variance across images of the L2-normalised group tokens, times D (so 1.0 is the variance of uniformly
    spread unit vectors). Higher: less dimensional collapse."""
    x = F.normalize(group_tokens.float(), dim=-1)
    return float(x.var(dim=0).mean() * x.shape[-1])


__all__ = ["final_assignment", "group_class_affinity", "pixel_groups", "class_scores", "labels_with_background", "identity_scores",
           "choose_background_threshold", "compactness", "richness", "group_usage", "CAPTION_TEMPLATE", "PAPER_TEMPLATE"]
