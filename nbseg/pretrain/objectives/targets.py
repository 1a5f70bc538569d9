"""Teacher targets other than DINO's centering: Sinkhorn-Knopp equipartition (SwAV, Caron et al. NeurIPS 2020; used
by DINOv2 in place of centering), selected by ``teacher_targets=sinkhorn``."""
from __future__ import annotations

import torch
import torch.distributed as dist

from nbseg.pretrain.dino import centered_teacher_probs

__all__ = ["sinkhorn_knopp_teacher_probs", "teacher_probs"]


@torch.no_grad()
def sinkhorn_knopp_teacher_probs(teacher_logits: torch.Tensor, teacher_temp: float, n_iters: int = 3,
                                 distributed: bool = False) -> torch.Tensor:
    """Teacher targets by Sinkhorn-Knopp normalisation (SwAV, Caron et al. 2020; used by DINOv2 in place of
    centering): the assignment matrix ``Q = exp(g_t(x) / tau_t)`` (B x K) is alternately rescaled so that every
    prototype receives mass 1/K and every sample 1/B; the rows of ``B Q`` are the targets.

    Equipartition forbids the uniform and the one-prototype collapse outright, which the EMA center only
    discourages. With ``distributed`` the sums run over every process's samples (B = the global batch).

    Args: teacher_logits (B, K). Returns (B, K) probabilities (each row sums to 1).
    """
    logits = teacher_logits.float() / teacher_temp
    q = torch.exp(logits - logits.max()).t()                                     # (K, B)
    n_samples = torch.tensor(q.shape[1], device=q.device, dtype=q.dtype)
    reduce = distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if reduce:
        dist.all_reduce(n_samples)
    K = q.shape[0]

    def total(x):
        if reduce:
            dist.all_reduce(x)
        return x

    q = q / total(q.sum())
    for _ in range(n_iters):
        q = q / total(q.sum(dim=1, keepdim=True)) / K                           # each prototype: mass 1/K
        q = q / q.sum(dim=0, keepdim=True) / n_samples                          # each sample: mass 1/B
    return (q * n_samples).t()


def teacher_probs(teacher_logits: torch.Tensor, rule: str, center: torch.Tensor, teacher_temp: float,
                  distributed: bool = False) -> torch.Tensor:
    """The teacher's targets for (..., K) logits by ``rule``: ``center`` (DINO) or ``sinkhorn`` (SwAV / DINOv2;
    over all leading dimensions at once, e.g. every patch of the batch)."""
    if rule == "center":
        return centered_teacher_probs(teacher_logits, center, teacher_temp)
    if rule == "sinkhorn":
        flat = teacher_logits.reshape(-1, teacher_logits.shape[-1])
        return sinkhorn_knopp_teacher_probs(flat, teacher_temp, distributed=distributed).view(teacher_logits.shape)
    raise ValueError(f"unknown teacher target rule {rule!r}: use 'center' or 'sinkhorn'")
