"""AlignSeg's training objective as pure tensor functions (Liu et al., TPAMI 2024, Sec. IV-B, Eq. 2 and 4-11).

Two forms of every term, chosen by ``variant``:

* ``"paper"`` - the equations as printed;
* ``"official"`` - what the released code (``yliu1229/AlignSeg``, ``model/criterion.py``) computes, from
  ``docs/official_implementations.md`` Sec. 3.3.

Shapes used throughout (one global crop and V local crops per image):

* ``x_g`` (B, n, D) global-crop patch tokens; ``x_l`` (B, V, m, D) local-crop patch tokens (frozen backbone);
* ``p_g`` (B, K, D) and ``p_l`` (B, V, K, D): image-adapted prototypes P^x of each crop (Eq. 1);
* ``s_g`` (B, n, K) and ``s_l`` (B, V, m, K): token-prototype cosines (Eq. 2);
* ``m_g`` (B, n) and ``m_l`` (B, V, m): boolean saliency masks (attention-map foreground, Sec. IV-A).

Paper versus released code, term by term (what each variant computes):

* L_proto, Eq. (4).
  ``paper``: InfoNCE of global prototype i against the K local prototypes (one direction, softmax over the K local
  ones), **summed over i**, averaged over the V locals (1/|v_l|) and over the batch; tau from the config (the paper's
  value is in its appendix, which we do not have; default 1).
  ``official``: NT-Xent over the 2K L2-normalised prototypes [P^g; P^l] (both directions; negatives = the other
  2K - 2 entries, self and positive excluded), averaged over the 2K rows, the batch and the locals; tau = 1.
* ProtoCorr, Eq. (5) and (8).
  ``paper``: ``max(s_g, 0) max(s_l, 0)^T``, the "0-clamp" product of the clamped cosines, no softmax.
  ``official``: ``softmax_K(max(s, 0) / T)`` per token with T = 1, then ``A = P_g P_l^T`` (the probability that two
  tokens pick the same prototype).
* DenseCorr, Eq. (6).
  ``paper``: ``cos(x_g, x_l)`` as is.
  ``official``: ``cos(x_g, x_l)`` spatially centred: minus each row's mean over the m local tokens, plus the scalar
  mean of the (B, n, m) map before centring (STEGO's "pointwise" trick); no gradient.
* Mask, Eq. (9): the same in both, fg(global token) AND fg(local token); no geometric-overlap mask.
* Reduction of Eq. (10).
  ``paper``: the paper prints none; we take minus the mean over the masked pairs of ``M * P * (F - h)`` per local
  crop, so the scale does not depend on the batch or the saliency, then 1/|v_l| over the locals.
  ``official``: ``0.15 * sum`` over the batch and every masked pair (the 0.15 is hard-coded in the released code; its
  config key is never read), then the mean over the locals. A sum: it grows with the batch and the fg fraction.
* h: a config value in both (the paper gives none in the text; released: 0.11 VOC, 0.10 COCO, 0.13 MOVi).
* Total, Eq. (11): ``alpha * L_proto + beta * L_corr``; the released code uses alpha = beta = 1.

The defaults of :func:`alignseg_loss_terms` for ``variant="official"`` reproduce the released code when called with
``tau_proto=1.0, corr_factor=0.15, corr_temperature=1.0, alpha=beta=1``; the method config passes them explicitly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbseg.prototype_scores import l2_normalise, token_prototype_cosine

VARIANTS = ("paper", "official")


def check_variant(variant: str) -> str:
    """``variant`` if it is ``"paper"`` or ``"official"``, else a ValueError saying which values exist."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown AlignSeg variant {variant!r}: use 'paper' (the equations as printed) or "
                         f"'official' (what the released code computes)")
    return variant


# ----------------------------------------------------------------------------------------------------------
# Prototype-image alignment, Eq. (4)
# ----------------------------------------------------------------------------------------------------------

def prototype_infonce_paper(p_g: torch.Tensor, p_l: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Eq. (4) as printed: ``-1/|v_l| sum_v sum_i log softmax_j(cos<P_i^g, P_j^{l_v}> / tau)[i]``.

    Args:
        p_g: (B, K, D) global-crop prototypes.
        p_l: (B, V, K, D) local-crop prototypes.
        tau: temperature.
    Returns:
        scalar: summed over the K prototypes i, averaged over the V local crops and the batch.
    """
    logits = torch.einsum("bkd,bvjd->bvkj", l2_normalise(p_g), l2_normalise(p_l)) / tau   # (B, V, K, K)
    log_p = F.log_softmax(logits, dim=-1)
    return -log_p.diagonal(dim1=-2, dim2=-1).sum(dim=-1).mean()


def prototype_ntxent_official(p_g: torch.Tensor, p_l: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The released code's prototype loss (``query_ce_loss``): NT-Xent over the 2K normalised prototypes.

    For each image and local crop, ``z = [norm(P^g); norm(P^l)]`` (2K, D) and ``sim = z z^T / tau``. Row r's
    positive is its counterpart (r + K mod 2K); its negatives are the other 2K - 2 rows (self excluded). The loss of a
    row is the cross-entropy of the positive against [positive, negatives], i.e. ``-sim[r, pos] +
    logsumexp_{j != r} sim[r, j]``.

    Args:
        p_g: (B, K, D); p_l: (B, V, K, D).
        tau: temperature (1 in the released configs, ``ce_temperature: 1``).
    Returns:
        scalar: mean over the 2K rows, the batch and the V local crops.
    """
    B, V, K, _ = p_l.shape
    z = torch.cat([l2_normalise(p_g)[:, None].expand(B, V, K, -1), l2_normalise(p_l)], dim=2)   # (B, V, 2K, D)
    sim = z @ z.transpose(-1, -2) / tau                                                         # (B, V, 2K, 2K)
    eye = torch.eye(2 * K, dtype=torch.bool, device=sim.device)
    log_p = F.log_softmax(sim.masked_fill(eye, float("-inf")), dim=-1)
    positive = (torch.arange(2 * K, device=sim.device) + K) % (2 * K)
    return -log_p.gather(-1, positive.view(1, 1, 2 * K, 1).expand(B, V, 2 * K, 1)).mean()


# ----------------------------------------------------------------------------------------------------------
# Global-local alignment with the attention-map constraint, Eq. (5)-(10)
# ----------------------------------------------------------------------------------------------------------

def dense_correlation(x_g: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor:
    """Eq. (6): ``DenseCorr = cos<x_g, x_l^v>`` for every local crop.

    Args:
        x_g: (B, n, D) global tokens; x_l: (B, V, m, D) local tokens.
    Returns:
        (B, V, n, m).
    """
    return torch.einsum("bnd,bvmd->bvnm", l2_normalise(x_g), l2_normalise(x_l))


def spatially_centred(corr: torch.Tensor) -> torch.Tensor:
    """The released code's target: ``F - mean_m(F) + mean(F)`` (STEGO's "pointwise" centring).

    Each row (global token) loses its mean over the m local tokens; the scalar mean of the whole (B, n, m) map of
    that local crop (batch included, taken before centring) is added back.

    Args:
        corr: (B, V, n, m) dense correlation.
    Returns:
        (B, V, n, m).
    """
    return corr - corr.mean(dim=-1, keepdim=True) + corr.mean(dim=(0, 2, 3), keepdim=True)


def clamped_prototype_correlation(s_g: torch.Tensor, s_l: torch.Tensor) -> torch.Tensor:
    """Eq. (5) with the "0-clamp" of Eq. (8): ``ProtoCorr = max(s_g, 0) max(s_l^v, 0)^T``.

    Args:
        s_g: (B, n, K) global cosines; s_l: (B, V, m, K) local cosines.
    Returns:
        (B, V, n, m), each entry in [0, K].
    """
    return torch.einsum("bnk,bvmk->bvnm", s_g.clamp_min(0), s_l.clamp_min(0))


def softmax_prototype_correlation(s_g: torch.Tensor, s_l: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The released code's ProtoCorr: ``A = softmax_K(max(s_g, 0) / T) softmax_K(max(s_l, 0) / T)^T``.

    Args:
        s_g: (B, n, K); s_l: (B, V, m, K); temperature: T (1 in the released code).
    Returns:
        (B, V, n, m), each entry in [0, 1]: the probability that the two tokens pick the same prototype.
    """
    p_g = F.softmax(s_g.clamp_min(0) / temperature, dim=-1)
    p_l = F.softmax(s_l.clamp_min(0) / temperature, dim=-1)
    return torch.einsum("bnk,bvmk->bvnm", p_g, p_l)


def saliency_pair_mask(m_g: torch.Tensor, m_l: torch.Tensor) -> torch.Tensor:
    """Eq. (9): ``M = m_g.repeat(m) * (m_l.repeat(n))^T``, i.e. both tokens in their crop's foreground.

    Args:
        m_g: (B, n) bool; m_l: (B, V, m) bool.
    Returns:
        (B, V, n, m) bool.
    """
    return m_g.bool()[:, None, :, None] & m_l.bool()[:, :, None, :]


def alignment_terms(proto_corr: torch.Tensor, dense_corr: torch.Tensor, h: float,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """The summand of Eq. (10): ``-M * ProtoCorr * (DenseCorr - h)`` (no reduction).

    Args:
        proto_corr: (B, V, n, m) predicted correlation (carries the gradient).
        dense_corr: (B, V, n, m) target correlation (detached here).
        h: the "negative pressure": pairs with DenseCorr < h are pushed apart.
        mask: (B, V, n, m) bool, or None for every pair (Eq. 7).
    Returns:
        (B, V, n, m), zero outside the mask.
    """
    terms = -proto_corr * (dense_corr.detach() - h)
    return terms if mask is None else terms * mask.to(terms.dtype)


def correlation_loss_paper(s_g: torch.Tensor, s_l: torch.Tensor, x_g: torch.Tensor, x_l: torch.Tensor,
                           m_g: torch.Tensor | None, m_l: torch.Tensor | None, h: float) -> torch.Tensor:
    """Eq. (10) as printed: clamped-cosine ProtoCorr (Eq. 8) against the raw DenseCorr (Eq. 6) minus h, inside the
    saliency intersection (Eq. 9).

    Reduction (not printed in the paper; our choice): the mean over the masked (b, j, k) pairs of each local crop,
    then ``1/|v_l|`` over the local crops. A crop pair with no foreground pair contributes 0.

    Args:
        s_g: (B, n, K); s_l: (B, V, m, K); x_g: (B, n, D); x_l: (B, V, m, D);
        m_g: (B, n) bool or None; m_l: (B, V, m) bool or None (None: no attention-map constraint, Eq. 7).
        h: negative pressure.
    Returns:
        scalar.
    """
    mask = None if m_g is None else saliency_pair_mask(m_g, m_l)
    terms = alignment_terms(clamped_prototype_correlation(s_g, s_l), dense_correlation(x_g, x_l), h, mask)
    if mask is None:
        return terms.mean()
    per_crop = terms.sum(dim=(0, 2, 3)) / mask.sum(dim=(0, 2, 3)).clamp_min(1).to(terms.dtype)   # (V,)
    return per_crop.mean()


def correlation_loss_official(s_g: torch.Tensor, s_l: torch.Tensor, x_g: torch.Tensor, x_l: torch.Tensor,
                              m_g: torch.Tensor | None, m_l: torch.Tensor | None, h: float, factor: float = 0.15,
                              temperature: float = 1.0) -> torch.Tensor:
    """The released code's global-local loss (``AlignCriterion``, docs Sec. 3.3 (a)).

    ``L_i = factor * sum_{(b, j, k) in M} -A[b, j, k] (F[b, j, k] - h)`` with ``A`` from
    :func:`softmax_prototype_correlation` and ``F`` the :func:`spatially_centred` dense correlation (no gradient);
    ``L = mean_i L_i`` over the local crops. A **sum** over the batch and the fg pairs: it grows with both.

    Args:
        as :func:`correlation_loss_paper`; factor: 0.15 (hard-coded in the released code); temperature: 1.
    Returns:
        scalar.
    """
    with torch.no_grad():
        target = spatially_centred(dense_correlation(x_g, x_l))
    mask = None if m_g is None else saliency_pair_mask(m_g, m_l)
    terms = alignment_terms(softmax_prototype_correlation(s_g, s_l, temperature), target, h, mask)
    return factor * terms.sum(dim=(0, 2, 3)).mean()


def total_loss(loss_proto: torch.Tensor, loss_corr: torch.Tensor, alpha: float = 1.0, beta: float = 1.0
               ) -> torch.Tensor:
    """Eq. (11): ``L = alpha * L_proto + beta * L_corr`` (the released code: alpha = beta = 1)."""
    return alpha * loss_proto + beta * loss_corr


def alignseg_loss_terms(variant: str, x_g: torch.Tensor, x_l: torch.Tensor, p_g: torch.Tensor, p_l: torch.Tensor,
                        m_g: torch.Tensor | None, m_l: torch.Tensor | None, *, h: float, tau_proto: float = 1.0,
                        corr_factor: float = 0.15, corr_temperature: float = 1.0, alpha: float = 1.0,
                        beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Every AlignSeg term of one batch for ``variant`` (see the module docstring's table).

    Args:
        variant: ``"paper"`` or ``"official"``.
        x_g: (B, n, D); x_l: (B, V, m, D) frozen tokens. p_g: (B, K, D); p_l: (B, V, K, D) decoded prototypes.
        m_g: (B, n); m_l: (B, V, m) saliency masks, or None for no attention-map constraint.
        h: negative pressure; tau_proto: temperature of L_proto; corr_factor / corr_temperature: the official
            form's 0.15 and softmax temperature (ignored by ``paper``); alpha, beta: Eq. (11) weights.
    Returns:
        ``{"loss", "loss_proto", "loss_corr"}`` scalars (``loss`` = Eq. 11).
    """
    check_variant(variant)
    s_g, s_l = token_prototype_cosine(x_g, p_g), token_prototype_cosine(x_l, p_l)
    if variant == "paper":
        loss_proto = prototype_infonce_paper(p_g, p_l, tau_proto)
        loss_corr = correlation_loss_paper(s_g, s_l, x_g, x_l, m_g, m_l, h)
    else:
        loss_proto = prototype_ntxent_official(p_g, p_l, tau_proto)
        loss_corr = correlation_loss_official(s_g, s_l, x_g, x_l, m_g, m_l, h, corr_factor, corr_temperature)
    return {"loss": total_loss(loss_proto, loss_corr, alpha, beta), "loss_proto": loss_proto,
            "loss_corr": loss_corr}
