"""Scoring patch tokens against prototypes: the one computation every prototype method and probe shares.

AlignSeg's Eq. (2)-(3), DCN's Eq. (5)-(6) and AlignSeg's Sec. III probes are the same two steps: the cosine of
every patch token with every prototype (or cluster centre), then the argmax over prototypes, after upsampling the
scores bilinearly to the pixels when labels are wanted at the image's size.

* :func:`l2_normalise` - ``x / max(||x||, eps)`` (AlignSeg's released ``norm``).
* :func:`token_prototype_cosine` - tokens (..., N, D) x prototypes (..., K, D) -> (..., N, K).
* :func:`prototype_cosine_maps` - a token grid (B, h, w, D) x prototypes (K, D) or (B, K, D) -> (B, K, h, w).
* :func:`segment_by_argmax` - scores (B, K, h, w) -> labels (B, H, W), bilinear upsampling then argmax (nbseg's
  path, Eq. 3 at the pixels).
* :func:`segment_on_grid` - scores (B, K, h, w) -> labels (B, H, W), argmax on the token grid then nearest
  upsampling (AlignSeg's released evaluation path, at 100 x 100).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbseg.cluster import upsample_labels


def l2_normalise(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``x / max(||x||, eps)`` along the last dimension (the released AlignSeg code's ``norm``, eps 1e-10)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def token_prototype_cosine(tokens: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """AlignSeg Eq. (2) / DCN Eq. (5): ``s = cos<x, P>``.

    Args:
        tokens: (..., N, D) patch tokens.
        prototypes: (..., K, D) prototypes of the same image (same leading dims).
    Returns:
        (..., N, K) cosine similarities in [-1, 1].
    """
    return l2_normalise(tokens) @ l2_normalise(prototypes).transpose(-1, -2)


def prototype_cosine_maps(patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine of every patch with every prototype, as maps.

    Args:
        patches: (B, h, w, D) token grid.
        prototypes: (K, D) shared by all images, or (B, K, D) one set per image (image-adapted prototypes,
            DCN's cluster centres).
    Returns:
        (B, K, h, w) in [-1, 1].
    """
    B, h, w, D = patches.shape
    if prototypes.ndim == 2:
        prototypes = prototypes.unsqueeze(0).expand(B, -1, -1)
    s = token_prototype_cosine(patches.reshape(B, h * w, D).float(), prototypes.float())       # (B, hw, K)
    return s.transpose(1, 2).reshape(B, -1, h, w)


def segment_by_argmax(scores: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """AlignSeg Eq. (3) / DCN Eq. (6): bilinearly upsample (B, K, h, w) scores to ``size`` (H, W) (None: keep the
    grid), then argmax over K -> (B, H, W) int64 labels in [0, K)."""
    if size is not None and tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores, size=tuple(size), mode="bilinear", align_corners=False)
    return scores.argmax(dim=1)


def segment_on_grid(scores: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Argmax over K on the token grid, then nearest upsampling of the labels to ``size``: (B, K, h, w) -> (B, H, W)
    int64. This is what AlignSeg's released evaluation does (argmax of the cosines at 28 x 28, labels resized to
    100 x 100); :func:`segment_by_argmax` interpolates the scores first, so the two differ along region borders."""
    return upsample_labels(scores.argmax(dim=1), size)


__all__ = ["l2_normalise", "token_prototype_cosine", "prototype_cosine_maps", "segment_by_argmax",
           "segment_on_grid"]
