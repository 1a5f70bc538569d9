"""Patch objectives *across* the two global views at corresponding image points (nbseg's variants, built from DINO /
iBOT's distillation and DenseCL / VICRegL's point pairs), selected by ``cross_view_loss_weight`` and
``dense_contrastive_weight``; the correspondences come from the crop maps of
:func:`nbseg.pretrain.batched_augment.corresponding_positions`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbseg.pretrain.batched_augment import corresponding_positions

__all__ = ["view_pair_positions", "corresponding_tokens", "cross_view_patch_loss", "dense_info_nce_loss"]


def view_pair_positions(thetas: torch.Tensor, n_views: int, grid: tuple[int, int]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """For every ordered pair (a, b) of the first ``n_views`` views, where view a's token centres lie in view b.

    Args: thetas: the views' (B, 2, 3) crop maps, indexed by view (G of them at least); grid: (h, w).
    Returns: positions (G, G, B, h, w, 2) in view b's normalised coordinates and inside (G, G, B, h, w) bool
    (:func:`nbseg.pretrain.batched_augment.corresponding_positions` for each pair)."""
    positions, inside = zip(*[corresponding_positions(thetas[a], thetas[b], grid)
                              for a in range(n_views) for b in range(n_views)])
    pair_shape = (n_views, n_views, *inside[0].shape)
    return torch.stack(positions).view(*pair_shape, 2), torch.stack(inside).view(pair_shape)


def corresponding_tokens(tokens: torch.Tensor, positions: torch.Tensor, grid: tuple[int, int]):
    """For each ordered pair (a, b) of distinct views, view b's per-token vectors read at the image points of
    view a's tokens: ``bilinear(tokens^b, pos_{a -> b}(j))``.

    Args:
        tokens: (G * B, h * w, C) per-token vectors (probabilities, embeddings), view-major.
        positions: (G, G, B, h, w, 2), as :func:`cross_view_patch_loss` takes them.
        grid: (h, w).
    Yields:
        (a, b, read) with read (B, h * w, C): row j is view b's vector under view a's token j.
    """
    G, B = positions.shape[0], positions.shape[2]
    h, w = grid
    maps = tokens.reshape(G, B, h, w, -1).permute(0, 1, 4, 2, 3)                     # (G, B, C, h, w)
    for a in range(G):
        for b in range(G):
            if a != b:
                read = F.grid_sample(maps[b], positions[a, b].to(maps.dtype), mode="bilinear",
                                     padding_mode="border", align_corners=False)  # (B, C, h, w)
                yield a, b, read.flatten(2).transpose(1, 2)


def cross_view_patch_loss(student_patch_logits: torch.Tensor, teacher_patch_p: torch.Tensor,
                          positions: torch.Tensor, inside: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Self-distillation of patch tokens *across* views, at corresponding image positions (nbseg's variant).

    iBOT's patch loss (:func:`masked_patch_loss`) compares a view with itself, so its targets can be met by
    anything the two copies share - on the world, a region's colours. Here the target of student token ``j`` of
    view ``a`` is the teacher's distribution of view ``b`` (its own crop, flip and colour draw) at the image point
    under ``j``'s centre, read bilinearly from the teacher's (h, w) token grid:

    ``P_t^b(p) = sum_q bilinear(p, q) P_t(x_b)_q`` (``P_t``: :func:`teacher_probs`), ``p = pos_{a -> b}(j)``, and
    ``L = sum_{j inside b} -P_t^b(p_j) . log softmax(g_s(x_a)_j / tau_s) / |inside|``, averaged over the ordered
    pairs (a, b) of the G views. The correspondence idea is that of DenseCL / VICRegL; the distillation form
    (centering, sharpening, a shared head) is DINO / iBOT's.

    Args:
        student_patch_logits: (G * B, N, K) student head outputs of the G views' patch tokens, view-major.
        teacher_patch_p: (G * B, N, K) teacher targets of the same views (no gradient).
        positions: (G, G, B, h, w, 2) ``positions[a, b]``: token centres of view a in view b's normalised
            coordinates (:func:`nbseg.pretrain.batched_augment.corresponding_positions`), N = h * w.
        inside: (G, G, B, h, w) bool, true where that centre lies inside view b.
    Returns:
        scalar loss.
    """
    G, _, B, h, w, _ = positions.shape
    K = teacher_patch_p.shape[-1]
    logp_s = F.log_softmax(student_patch_logits.float() / student_temp, dim=-1).view(G, B, h * w, K)
    total, n_pairs = logp_s.new_zeros(()), 0
    for a, b, target in corresponding_tokens(teacher_patch_p.detach().float(), positions, (h, w)):
        per_token = torch.sum(-target * logp_s[a], dim=-1)                           # (B, N)
        valid = inside[a, b].flatten(1).to(per_token.dtype)
        total = total + torch.sum(per_token * valid) / valid.sum().clamp(min=1.0)
        n_pairs += 1
    return total / max(n_pairs, 1)


def dense_info_nce_loss(query_z: torch.Tensor, key_z: torch.Tensor, positions: torch.Tensor, inside: torch.Tensor,
                        temperature: float, max_queries: int | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Contrastive loss between patch embeddings of two views at corresponding image points (InfoNCE, van den
    Oord et al. 2018; dense pairs as in DenseCL / VICRegL; query and key encoders as in MoCo v3).

    For query token ``j`` of view ``a`` of image ``i``, the positive is view ``b``'s key embedding read at the same
    image point, ``k+ = normalize(bilinear(k^b, pos_{a->b}(j)))``, and the negatives are the positives of the
    *other images'* queries (a token of the same image is never a negative: it may well lie in the same region):

    ``L = -1/|Q| sum_{(i, j) in Q} log( exp(q_ij . k+_ij / tau) / sum_{(i', j') in Q, i' = i => j' = j}
    exp(q_ij . k+_i'j' / tau) )``, over valid (inside) tokens ``Q``, averaged over the ordered view pairs.
    Unlike DINO's targets this cannot be met by a constant output, so it cannot collapse.

    Args:
        query_z: (G * B, N, D) unit embeddings of the student's views (view-major).
        key_z: (G * B, N, D) unit embeddings of the key encoder's (teacher's) views (no gradient).
        positions, inside: (G, G, B, h, w, 2) and (G, G, B, h, w), as in :func:`cross_view_patch_loss`.
        temperature: tau.
        max_queries: use at most this many valid tokens per view pair (drawn from ``generator``), which bounds
            the (|Q|, |Q|) similarity matrix.
    Returns:
        scalar loss.
    """
    G, _, B, h, w, _ = positions.shape
    D = key_z.shape[-1]
    q_all = query_z.float().reshape(G, B * h * w, D)
    image_of = torch.arange(B, device=query_z.device).repeat_interleave(h * w)     # (B * N,)
    total, n_pairs = q_all.new_zeros(()), 0
    for a, b, k in corresponding_tokens(key_z.detach().float(), positions, (h, w)):
        k = F.normalize(k.reshape(B * h * w, D), dim=-1)
        valid = inside[a, b].reshape(-1).nonzero().squeeze(1)
        if max_queries is not None and valid.numel() > max_queries:
            pick = torch.randperm(valid.numel(), generator=generator, device=valid.device)[:max_queries]
            valid = valid[pick]
        if valid.numel() < 2:
            continue
        logits = q_all[a][valid] @ k[valid].t() / temperature                         # (|Q|, |Q|)
        same_image = image_of[valid].unsqueeze(0) == image_of[valid].unsqueeze(1)
        eye = torch.eye(valid.numel(), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same_image & ~eye, float("-inf"))
        total = total + F.cross_entropy(logits, torch.arange(valid.numel(), device=logits.device))
        n_pairs += 1
    return total / max(n_pairs, 1)
