"""DCN's modularity loss (Li et al. 2022, Sec. 3.3, Eq. 7-10) as pure tensor functions.

Graph: the n pixel embeddings of one image are the vertices of a fully connected undirected graph whose edge weights
are the clamped cosines ``A_ij = max(0, cos(x_i, x_j))`` (Eq. 8), self-pairs included (``A_ii = 1`` for any non-zero
embedding). With the degrees ``k_i = sum_j A_ij`` and ``2m = sum_ij A_ij`` (the sum over all ordered pairs, so
``m`` is the total edge weight of the undirected graph), the modularity of a co-membership ``delta`` is

    q = 1/(2m) * sum_ij (A_ij - k_i k_j / (2m)) delta_ij                                   (Eq. 7)

Hard assignments give ``delta_ij = [a_i == a_j]`` and the usual Newman-Girvan modularity; for the loss, ``delta`` is
the soft co-membership ``max_c S+_ic S+_jc`` with ``S+ = max(0, S)`` (Eq. 9), and ``L = -q`` (Eq. 10), averaged over
the images of a batch. A, k and m depend on the frozen embeddings only, so the gradient flows through ``delta``.

Equivalence with networkx: the matrix form with a diagonal ``A_ii`` is the modularity of the weighted graph with edge
weights ``A_ij`` (i < j) and a self-loop of weight ``A_ii / 2`` at every vertex (networkx counts a self-loop twice in
the degree and once in the total weight); ``tests/test_dcn.py`` checks it against
``networkx.algorithms.community.modularity``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-12


def cosine_affinity(x: torch.Tensor) -> torch.Tensor:
    """Eq. (8): ``A_ij = max(0, cos(x_i, x_j))``.

    Args:
        x: (B, n, D) pixel embeddings of B images.
    Returns:
        (B, n, n) float32 symmetric, non-negative affinities (diagonal 1 for non-zero embeddings).
    """
    z = F.normalize(x.float(), dim=-1)
    return (z @ z.transpose(-1, -2)).clamp_min_(0.0)


def soft_comembership(s: torch.Tensor) -> torch.Tensor:
    """Eq. (9): ``delta_ij = max_c S+_ic * S+_jc`` with ``S+ = max(0, S)``.

    Args:
        s: (B, n, K) soft assignment (cosines of pixels with cluster centres, Eq. 5).
    Returns:
        (B, n, n) in [0, 1] for cosine inputs. Computed as a running maximum over the K clusters, so memory is
        O(B n^2), not O(B n^2 K).
    """
    sp = s.float().clamp_min(0.0)
    delta = sp[..., :, 0, None] * sp[..., None, :, 0]
    for c in range(1, sp.shape[-1]):
        delta = torch.maximum(delta, sp[..., :, c, None] * sp[..., None, :, c])
    return delta


def hard_comembership(labels: torch.Tensor) -> torch.Tensor:
    """The indicator of Eq. (7): ``delta_ij = [a_i == a_j]``.

    Args:
        labels: (B, n) integer cluster of each pixel (Eq. 6).
    Returns:
        (B, n, n) float32 of 0 / 1.
    """
    return (labels[..., :, None] == labels[..., None, :]).float()


def modularity(affinity: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Eq. (7) / (10) without the sign: ``q = 1/(2m) sum_ij (A_ij - k_i k_j / 2m) delta_ij``.

    Args:
        affinity: (B, n, n) symmetric non-negative edge weights A (self-pairs on the diagonal).
        delta: (B, n, n) co-membership in [0, 1] (hard or soft).
    Returns:
        (B,) modularity per graph, in [-1/2, 1) for hard co-memberships; 0 for a graph without edges.
    """
    a = affinity.float()
    d = delta.float()
    degree = a.sum(-1)                                              # k_i, (B, n)
    two_m = degree.sum(-1).clamp_min(EPS)                           # 2m, (B,)
    observed = (a * d).sum((-2, -1))                                # sum_ij A_ij delta_ij
    expected = torch.einsum("bi,bij,bj->b", degree, d, degree) / two_m   # sum_ij k_i k_j delta_ij / 2m
    return (observed - expected) / two_m


def modularity_loss(x: torch.Tensor | None, s: torch.Tensor, affinity: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (10), averaged over the batch: ``-mean_b q(A(x_b), delta(S_b))`` with Eq. (8) and Eq. (9).

    Args:
        x: (B, n, D) frozen pixel embeddings (unused when ``affinity`` is given).
        s: (B, n, K) soft assignment of the same pixels (Eq. 5), with gradient.
        affinity: (B, n, n) Eq. (8) of x, when the caller has it already.
    Returns:
        scalar float32 loss. Computed in float32 outside autocast: sums over n^2 pairs lose too much in bf16.
    """
    with torch.autocast(device_type=s.device.type, enabled=False):
        if affinity is None:
            with torch.no_grad():
                affinity = cosine_affinity(x)
        return -modularity(affinity, soft_comembership(s)).mean()


def hard_modularity(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Modularity (Eq. 7) of a hard partition on the affinity graph of Eq. (8): x (B, n, D), labels (B, n) -> (B,)."""
    return modularity(cosine_affinity(x), hard_comembership(labels))


__all__ = ["cosine_affinity", "soft_comembership", "hard_comembership", "modularity", "modularity_loss",
           "hard_modularity"]
