"""SAN's semantic side as pure tensor functions (Zhang et al., AAAI 2023): batch-wise pooling of the semantic
generator's tokens (Eq. 4), the token matcher's class weights and Gamma = p x zeta, the semantic logits and SEAT
(Eq. 3), and inference by argmax. Shapes in every docstring: B images, K ViT tokens, N semantic embeddings, P
embedding length, n = H * W pixels.
"""
from __future__ import annotations

import math

import torch

MATCHERS = ("simplex", "sigmoid", "none")


def batchwise_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Eq. (4), ``S = F_S(sum_n x_n)``, read as pooling the ViT's per-image outputs over the batch (the text: "the
    transformer encoder extracts information from each input image ... merge all the output information"):
    tokens (B, K, P) -> (K, P), the mean over the B images (a mean, not a sum, so the scale does not grow with B)."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (B, K, P), got {tuple(tokens.shape)}")
    return tokens.mean(0)


def class_weights(logits: torch.Tensor, kind: str = "simplex") -> torch.Tensor:
    """The token matcher's per-image weights p of the N semantic embeddings: logits (B, N) -> p (B, N).

    ``"simplex"``: ``p = softmax(logits)``, p in the probability simplex Delta^N (the paper's text);
    ``"sigmoid"``: ``p = sigmoid(logits)``, each weight in (0, 1) on its own (Fig. 3c's legend);
    ``"none"``: ``p = 1`` (no token matcher: Gamma = zeta, Table 5's ablation)."""
    if kind == "simplex":
        return logits.softmax(-1)
    if kind == "sigmoid":
        return logits.sigmoid()
    if kind == "none":
        return torch.ones_like(logits)
    raise ValueError(f"token matcher {kind!r} is not one of {MATCHERS}")


def matched_semantics(p: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
    """``Gamma_d = p_n x zeta_n``: every semantic embedding scaled by the image's weight for it.
    p (B, N); zeta (N, P) batch-wise (one set for the whole batch) or (B, N, P) per image -> Gamma (B, N, P)."""
    if zeta.ndim == 2:
        zeta = zeta.unsqueeze(0)
    return p.unsqueeze(-1) * zeta


def semantic_logits(q: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``Q_n Gamma^T / sqrt(d)`` of Eq. (3) with d = P: q (B, n, P), gamma (B, N, P) -> (B, n, N)."""
    return torch.einsum("bip,bkp->bik", q, gamma) / math.sqrt(q.shape[-1])


def seat(q: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic attention, Eq. (3): ``Theta = softmax(Q Gamma^T / sqrt(P)) Gamma``.
    q (B, n, P) pixel-wise embeddings, gamma (B, N, P) -> (Theta (B, n, P) alignment embeddings,
    attention (B, n, N), each row a distribution over the N semantics)."""
    attention = semantic_logits(q, gamma).softmax(-1)
    return attention @ gamma, attention


def segment_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Inference: every pixel takes the semantic of highest ``Q Gamma^T``: logits (B, n, N) -> ids (B, n) int64."""
    return logits.argmax(-1)


__all__ = ["MATCHERS", "batchwise_tokens", "class_weights", "matched_semantics", "semantic_logits", "seat",
           "segment_from_logits"]
