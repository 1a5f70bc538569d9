"""TransFGU's bootstrapping objective (Sec. 3.2-3.3, Eq. 8-16) as pure tensor functions.

Shapes: logits (B, K, h, w) are the decoder's masks before softmax; pseudo labels P (B, K, h, w) are Grad-CAM maps
cropped to the same grid. Where the released code differs from the paper both are here and the model picks by
``variant`` (docs/official_implementations.md Sec. 5.4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Released peer-loss weights, indexed by epochs since the last teacher refresh (capped at the last one).
OFFICIAL_ALPHAS = (0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10)


def minmax_normalise(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per image over all classes and pixels together: ``(P - min) / (max - min)``. (B, K, h, w) -> same."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (maps.ndim - 1)
    return (maps - lo.view(shape)) / (hi - lo).clamp_min(eps).view(shape)


def with_background(maps: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Eq. (8): prepend ``M_bg = relu(T_bg - max_k M_k)`` as channel 0. (B, K, h, w) -> (B, K + 1, h, w)."""
    bg = (threshold - maps.amax(1, keepdim=True)).clamp_min(0)
    return torch.cat([bg, maps], 1)


def bootstrap_target(pseudo: torch.Tensor, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (12): ``0.5 * softmax(teacher) + 0.5 * P`` once a teacher exists, else ``P``. (B, K, h, w)."""
    if teacher_logits is None:
        return pseudo
    return 0.5 * teacher_logits.softmax(1) + 0.5 * pseudo


def peer_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, permutation: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Eq. (13): ``CE(P, argmax M) - alpha * CE(P, argmax M')`` where M' is M with its class channels permuted by
    ``permutation`` (K,) (one per batch). Means over pixels. alpha = 0 or no permutation: plain CE (Eq. 9)."""
    loss = F.cross_entropy(logits, target.argmax(1))
    if alpha and permutation is not None:
        loss = loss - alpha * F.cross_entropy(logits, target[:, permutation].argmax(1))
    return loss


def uncertainty_loss(logits: torch.Tensor, mask: torch.Tensor | None = None, channels: slice | None = None
                     ) -> torch.Tensor:
    """Eq. (14): ``1 - mean (p1 - p2)``, the gap of the two largest softmax probabilities per pixel.

    ``channels``: the softmax runs over these channels only (VOC as released: foreground channels); ``mask``
    (B, h, w) bool: pixels averaged over (VOC: where any normalised pseudo label > 0.1; empty mask -> 0)."""
    probs = (logits if channels is None else logits[:, channels]).softmax(1)
    top2 = probs.topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]                                           # (B, h, w)
    if mask is None:
        return 1 - gap.mean()
    if not mask.any():
        return logits.sum() * 0
    return 1 - gap[mask].mean()


def diversity_loss_paper(class_embeddings: torch.Tensor) -> torch.Tensor:
    """Eq. (15): ``1 + (1/K^2) sum_ij C_i . C_j / sqrt(d)``; C (B, K, d) (mean over images) or (K, d)."""
    c = class_embeddings if class_embeddings.ndim == 3 else class_embeddings[None]
    K, d = c.shape[-2:]
    return (1 + (c @ c.transpose(-2, -1)).sum((-2, -1)) / (K * K * d ** 0.5)).mean()


def diversity_loss_official(class_embeddings: torch.Tensor) -> torch.Tensor:
    """Released ``cls_emb_loss``: mean over pairs i < j of ``1 + cos(e_i, e_j)`` of the image-conditioned output
    class embeddings; (B, K, d) (mean over images) or (K, d)."""
    c = F.normalize(class_embeddings if class_embeddings.ndim == 3 else class_embeddings[None], dim=-1)
    K = c.shape[-2]
    i, j = torch.triu_indices(K, K, offset=1, device=c.device)
    return (1 + (c @ c.transpose(-2, -1))[:, i, j]).mean()


def peer_alpha(epochs_since_refresh: int, epochs_per_round: int, variant: str) -> float:
    """The peer-loss weight: released ``0.03 + 0.01 e`` capped at 0.10 (e = epochs since the last teacher refresh);
    paper ("linearly increases from 0.03 to 0.1"): linear over the round's ``epochs_per_round`` epochs."""
    e = max(0, int(epochs_since_refresh))
    if variant == "official":
        return OFFICIAL_ALPHAS[min(e, len(OFFICIAL_ALPHAS) - 1)]
    span = max(1, int(epochs_per_round) - 1)
    return 0.03 + 0.07 * min(e, span) / span


__all__ = ["minmax_normalise", "with_background", "bootstrap_target", "peer_loss", "uncertainty_loss",
           "diversity_loss_paper", "diversity_loss_official", "peer_alpha", "OFFICIAL_ALPHAS"]
