"""PGSeg's objective as pure tensor functions (Zhang et al., NeurIPS 2023, "Uncovering Prototypical Knowledge for
Weakly Open-Vocabulary Semantic Segmentation").

* :func:`symmetric_infonce` - L_IT, the symmetric image-text contrastive loss of CLIP (Eq. 4's first term).
* :func:`em_prototypes` - NPR's prototype generation, Eq. (1)-(2) (Algorithm 1, lines 1-5): T EM steps, no grad.
* :func:`scalar_em_prototypes` - T-NPR's EM on the text embedding's channels treated as scalar samples.
* :func:`hungarian_pairing` - Algorithm 1, line 7; ``maximize=False`` is the released code's pairing.
* :func:`hard_rejection_mask` - the hard rejecting strategy (HRS, line 8); ``diagonal=False`` is the released
  code's gather of column 0.
* :func:`pg_loss` - L_PG, Eq. (3), over the kept pairs.
* :func:`ema_prototypes` - the momentum update of the initial prototypes (Sec. 4.2).

Where the paper and the released code differ, both are here and the model picks one with ``variant``
(docs/official_implementations.md Sec. 6.2, pitfall 15).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

LOGIT_SCALE_MAX = 100.0


def clamped_scale(log_scale: torch.Tensor, max_scale: float = LOGIT_SCALE_MAX) -> torch.Tensor:
    """``s = min(exp(log_scale), max_scale)``: CLIP's learnable logit scale, clamped at 100."""
    return log_scale.exp().clamp(max=max_scale)


def symmetric_infonce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """L_IT: image (B, E), text (B, E) paired by row -> scalar
    ``0.5 * [CE(s * I T^T, diag) + CE(s * T I^T, diag)]`` with I, T L2-normalised (CLIP; PGSeg Eq. 4)."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = scale * image @ text.t()
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@torch.no_grad()
def em_prototypes(x: torch.Tensor, mu0: torch.Tensor, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """NPR prototype generation, Eq. (1)-(2), ``iters`` EM steps from the initial prototypes, without gradients.

    E-step (Eq. 1, kernel exp(p v^T), identity covariance, no mixing weights): ``y_ij = softmax_i(p_i v_j^T)``;
    M-step (Eq. 2): ``p_i = sum_j y_ij v_j / sum_j y_ij``, then L2-normalised over channels (the released code
    normalises every M-step; Eq. 2 and the normalised prototypes of Sec. 4.1 agree on the direction).

    Args:
        x: (B, N, D) prototypical source V per image.
        mu0: (G, D) or (B, G, D) initial prototypes.
    Returns:
        mu (B, G, D) L2-normalised prototypes and z (B, N, G) the last E-step's responsibilities (rows sum to 1).
    """
    x = x.float()
    mu = mu0.float().expand(x.shape[0], -1, -1) if mu0.dim() == 2 else mu0.float()
    z = x.new_zeros(x.shape[0], x.shape[1], mu.shape[1])
    for _ in range(iters):
        z = torch.softmax(x @ mu.transpose(1, 2), dim=-1)                   # (B, N, G), Eq. (1)
        weights = z / (z.sum(dim=1, keepdim=True) + 1e-6)                  # normalised over tokens
        mu = F.normalize(weights.transpose(1, 2) @ x, dim=-1)               # (B, G, D), Eq. (2)
    return mu, z


@torch.no_grad()
def scalar_em_prototypes(f: torch.Tensor, mu0: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """T-NPR: the C channels of each text embedding f (B, C) are C scalar samples; EM as :func:`em_prototypes`
    with K scalar prototypes mu0 (K,), the prototype vector L2-normalised across the K prototypes after each
    M-step (a 1-D prototype cannot be normalised over its one channel). Returns (B, K)."""
    x = f.float().unsqueeze(-1)                                             # (B, C, 1)
    mu = mu0.float().reshape(1, -1).expand(f.shape[0], -1)                 # (B, K)
    for _ in range(iters):
        z = torch.softmax(x * mu.unsqueeze(1), dim=-1)                      # (B, C, K)
        weights = z / (z.sum(dim=1, keepdim=True) + 1e-6)
        mu = F.normalize((weights * x).sum(dim=1), dim=-1)                  # (B, K)
    return mu


def hungarian_pairing(similarity: torch.Tensor, maximize: bool = True) -> torch.Tensor:
    """Algorithm 1, line 7: similarity (B, G, P) of group i to prototype j -> (B, G) index of each group's
    prototype (one-to-one, G <= P). ``maximize=True`` pairs for the largest total similarity (the paper's
    "matched prototypes"); ``maximize=False`` is scipy's default minimisation, which the released code runs on the
    cosine matrix (docs Sec. 6.2: the pairing then *minimises* similarity)."""
    sim = similarity.detach().float().cpu().numpy()
    out = np.empty(sim.shape[:2], dtype=np.int64)
    for b in range(sim.shape[0]):
        rows, cols = linear_sum_assignment(sim[b], maximize=maximize)
        out[b, rows] = cols
    return torch.from_numpy(out).to(similarity.device)


def hard_rejection_mask(cosine: torch.Tensor, phi: float = 0.1, diagonal: bool = True) -> torch.Tensor:
    """HRS (Algorithm 1, line 8): cosine (B, G, G) of group i to its *paired* prototype j (pair i on the
    diagonal) -> (B, G) bool, keep pair i. The similarities are min-max normalised over the group axis (dim 1),
    then pair i is kept when its normalised similarity exceeds ``phi``. ``diagonal=True`` reads pair i's own entry
    (i, i), as the paper says; ``diagonal=False`` reads column 0 (i, 0), the released code's gather (docs 6.2)."""
    lo = cosine.amin(dim=1, keepdim=True)
    hi = cosine.amax(dim=1, keepdim=True)
    normalised = (cosine - lo) / (hi - lo).clamp_min(1e-6)
    index = torch.arange(cosine.shape[1], device=cosine.device) if diagonal else \
        torch.zeros(cosine.shape[1], dtype=torch.long, device=cosine.device)
    return normalised[:, torch.arange(cosine.shape[1], device=cosine.device), index] > phi


def pg_loss(groups: torch.Tensor, prototypes: torch.Tensor, scale: torch.Tensor | float,
            keep: torch.Tensor | None = None) -> torch.Tensor:
    """L_PG, Eq. (3): groups (B, G, D), prototypes (B, G, D) paired by index (row i of both is a pair),
    ``scale`` = 1/tau -> scalar.

    ``logits = scale * cos(g_i, p_j)``; the loss of pair i is ``CE(logits[i, :], i) + CE(logits[:, i], i)`` (the
    two log-ratios of Eq. 3), averaged over the kept pairs (``keep`` (B, G) bool, HRS; None keeps all) of every
    image. An image with no kept pair contributes 0. The prototypes are targets: pass them detached."""
    logits = scale * F.normalize(groups, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)   # (B, G, G)
    target = torch.arange(groups.shape[1], device=groups.device).expand(groups.shape[0], -1)
    per_pair = (F.cross_entropy(logits.transpose(1, 2), target, reduction="none")          # groups over prototypes
                + F.cross_entropy(logits, target, reduction="none"))                       # prototypes over groups
    if keep is None:
        return per_pair.mean()
    keep = keep.float()
    return (per_pair * keep).sum() / keep.sum().clamp_min(1.0)


def paired(prototypes: torch.Tensor, pairing: torch.Tensor) -> torch.Tensor:
    """Prototypes (B, P, D) reordered so that row i is group i's prototype: pairing (B, G) -> (B, G, D)."""
    return torch.gather(prototypes, 1, pairing.unsqueeze(-1).expand(-1, -1, prototypes.shape[-1]))


def ema_prototypes(old: torch.Tensor, new: torch.Tensor, gamma: float = 0.9) -> torch.Tensor:
    """Momentum update (Sec. 4.2): old (G, D) initial prototypes, new (B, G, D) prototypes after T EM steps ->
    ``normalize(gamma * old + (1 - gamma) * mean_b new_b)``. The paper writes a sum over the batch; the mean
    keeps the step independent of the batch size, and the result is re-normalised like every prototype."""
    return F.normalize(gamma * old + (1 - gamma) * new.mean(dim=0), dim=-1)


__all__ = ["clamped_scale", "symmetric_infonce", "em_prototypes", "scalar_em_prototypes", "hungarian_pairing",
           "hard_rejection_mask", "pg_loss", "paired", "ema_prototypes", "LOGIT_SCALE_MAX"]
