"""Representation-collapse diagnostics of a segmentation model (SAN's claim that reconstruction prevents collapse):

* :func:`cluster_marginal` - the fraction of pixels each cluster holds over a split;
* :func:`clusters_holding` - how many clusters hold more than a fraction (1 %) of the pixels;
* :func:`marginal_entropy` - the entropy of that marginal, ``H = -sum_k m_k log m_k`` (nats; log K = no collapse
  in the sense of equal use, 0 = one cluster takes every pixel);
* :func:`effective_rank` - Roy & Vetterli's (2007) effective rank of an embedding matrix,
  ``exp(-sum_i s_i log s_i)`` with ``s_i = sigma_i / sum_j sigma_j`` the normalised singular values: 1 when every
  row is a multiple of one vector (collapsed embeddings), min(n, P) when all singular values are equal.

The matrix is not centred, as in Roy & Vetterli: embeddings that collapse to one shared vector have rank 1.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


def cluster_marginal(labels: Iterable[torch.Tensor] | torch.Tensor, k: int) -> torch.Tensor:
    """Cluster ids (any shapes, values in 0..k-1) -> (k,) float64 fractions of all pixels, summing to 1."""
    labels = [labels] if isinstance(labels, torch.Tensor) else labels
    counts = torch.zeros(k, dtype=torch.float64)
    for lab in labels:
        flat = lab.reshape(-1).long().cpu()
        if flat.numel() and (flat.min() < 0 or flat.max() >= k):
            raise ValueError(f"cluster ids must lie in 0..{k - 1}, got {int(flat.min())}..{int(flat.max())}")
        counts += torch.bincount(flat, minlength=k).double()
    total = counts.sum()
    if total == 0:
        raise ValueError("no pixels: the cluster marginal of an empty split is undefined")
    return counts / total


def clusters_holding(marginal: torch.Tensor, fraction: float = 0.01) -> int:
    """Number of clusters holding more than ``fraction`` of the pixels; marginal (k,)."""
    return int((marginal > fraction).sum())


def marginal_entropy(marginal: torch.Tensor) -> float:
    """``-sum_k m_k log m_k`` in nats (empty clusters add 0); marginal (k,) summing to 1."""
    m = marginal.double()
    return float(-(m[m > 0] * m[m > 0].log()).sum())


def effective_rank(x: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007) of x (n, P): ``exp(H(sigma / sum sigma))`` of its singular values."""
    if x.ndim != 2:
        raise ValueError(f"effective_rank expects a matrix (n, P), got {tuple(x.shape)}")
    sigma = torch.linalg.svdvals(x.double())
    total = sigma.sum()
    if total <= 0:
        return 0.0
    return math.exp(marginal_entropy(sigma / total))


def collapse_diagnostics(labels, k: int, embeddings: torch.Tensor | None = None, fraction: float = 0.01) -> dict:
    """The three diagnostics as a flat dict: ``clusters_over_1pct`` (named for the default fraction), ``entropy``
    (nats), ``entropy_max`` (log k), ``largest_cluster`` (fraction) and, with ``embeddings`` (n, P),
    ``effective_rank`` (with ``embedding_dim`` P, its upper bound when n >= P)."""
    m = cluster_marginal(labels, k)
    out = {"clusters_over_1pct" if fraction == 0.01 else f"clusters_over_{fraction:g}": clusters_holding(m, fraction),
           "entropy": marginal_entropy(m), "entropy_max": math.log(k),
           "largest_cluster": float(m.max())}
    if embeddings is not None:
        out.update({"effective_rank": effective_rank(embeddings), "embedding_dim": int(embeddings.shape[-1])})
    return out


__all__ = ["cluster_marginal", "clusters_holding", "marginal_entropy", "effective_rank", "collapse_diagnostics"]
