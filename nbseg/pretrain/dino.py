"""DINO self-distillation (Caron et al., ICCV 2021, "Emerging Properties in Self-Supervised Vision Transformers").

The pieces of the method as pure functions and small modules, each named after what it computes:

* :func:`dino_loss` - cross-entropy between the teacher's target distribution of each global view and the
  student distribution of every *other* view (paper Eq. 2 and Algorithm 1).
* :func:`teacher_probs` - the targets: centred and sharpened (:func:`centered_teacher_probs`, DINO) or balanced by
  Sinkhorn-Knopp (:func:`sinkhorn_knopp_teacher_probs`, SwAV / DINOv2), by a config switch.
* :func:`updated_center` - the EMA of the teacher's batch mean output that prevents collapse (centering).
* :func:`cosine_schedule` - DINO's per-iteration cosine schedule with linear warm-up (lr, weight decay, momentum);
  it lives in :mod:`nbseg.train.schedules`, shared with every method's training loop.
* :func:`teacher_temperature_schedule` - the linear teacher-temperature warm-up, then constant.
* :func:`ema_update_` - teacher <- m * teacher + (1 - m) * student.
* :func:`clip_gradients_` - DINO clips each parameter's gradient norm separately.
* :class:`DINOHead` - the projection head: 3-layer MLP -> L2 normalisation -> weight-normalised last layer
  (its norm fixed at 1, ``norm_last_layer=True``).
* DINO's multi-crop views (:class:`~nbseg.data.multicrop.MultiCropAugmentation`, re-exported here) live with the
  other multi-crop code in :mod:`nbseg.data.multicrop`.

Length: over 400 lines: DINO's pieces and the optional patch-level objectives beside them; to be split with
``pretrain()`` (see :mod:`nbseg.pretrain.train`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nbseg.data.multicrop import MultiCropAugmentation, MultiCropConfig, random_resized_crop_box
from nbseg.train.schedules import cosine_schedule

__all__ = ["dino_loss", "centered_teacher_probs", "sinkhorn_knopp_teacher_probs", "teacher_probs", "updated_center", "cosine_schedule", "teacher_temperature_schedule", "ema_update_",
           "clip_gradients_", "DINOHead", "StudentTeacherNet", "masked_patch_loss", "cross_view_patch_loss", "dense_info_nce_loss",
           "random_patch_masks", "MultiCropConfig", "MultiCropAugmentation", "random_resized_crop_box"]


# ----------------------------------------------------------------------------------------------------------
# Loss and centering
# ----------------------------------------------------------------------------------------------------------

def centered_teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temp: float
                           ) -> torch.Tensor:
    """DINO's teacher targets (Sec. 3.1, centering and sharpening): ``P_t = softmax((g_t(x) - C) / tau_t)``.

    Args: teacher_logits (..., K); center (1, K). Returns (..., K) probabilities, without gradient."""
    return F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1).detach()


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


def dino_loss(student_logits: torch.Tensor, teacher_p: torch.Tensor, n_global: int, student_temp: float
              ) -> torch.Tensor:
    """DINO's multi-crop distillation loss (Eq. 2, Algorithm 1).

    ``P_s = softmax(g_s(x') / tau_s)`` for each view and ``L = mean over pairs (x in globals, x' in all views,
    x' != x) of  -sum_k P_t(x)[k] log P_s(x')[k]``, averaged over the batch, where ``P_t`` are the teacher's
    targets (:func:`teacher_probs`: centred and sharpened, or Sinkhorn-Knopp).

    Args:
        student_logits: (V * B, K) head outputs for V views, grouped view-major (all of view 0 first).
        teacher_p: (n_global * B, K) teacher targets for the global views (no gradient).
        n_global: number of global views (the first ``n_global`` student views are the same images).
    Returns:
        scalar loss.
    """
    n_views = student_logits.shape[0] // (teacher_p.shape[0] // n_global)
    student_logp = F.log_softmax(student_logits.float() / student_temp, dim=-1).chunk(n_views)
    teacher_p = teacher_p.detach().chunk(n_global)
    total, n_pairs = student_logits.new_zeros((), dtype=torch.float32), 0
    for t_idx, p_t in enumerate(teacher_p):
        for s_idx, logp_s in enumerate(student_logp):
            if s_idx == t_idx:       # never compare a view with itself
                continue
            total = total + torch.sum(-p_t * logp_s, dim=-1).mean()
            n_pairs += 1
    return total / n_pairs


def masked_patch_loss(student_patch_logits: torch.Tensor, teacher_patch_p: torch.Tensor, masks: torch.Tensor,
                      student_temp: float) -> torch.Tensor:
    """iBOT's masked-image-modelling loss (Zhou et al., ICLR 2022, Eq. 2 with a shared head): self-distillation
    on the *patch* tokens that the student saw masked, against the teacher's tokens of the unmasked view.

    ``P_t[j]`` the teacher's target for patch ``j`` (:func:`teacher_probs`, e.g. ``softmax((g_t(x)_j - C_p) /
    tau_t)``), ``P_s[j] = softmax(g_s(x~)_j / tau_s)``, and
    ``L = mean over images b of  sum_{j in M_b} -P_t[j] . log P_s[j] / max(|M_b|, 1)``, over the global views.

    Args:
        student_patch_logits: (G * B, N, K) head outputs of the student's (masked) global views' patch tokens.
        teacher_patch_p: (G * B, N, K) teacher targets of the same views, unmasked (no gradient).
        masks: (G * B, N) bool, true where the student's patch was replaced by the mask token.
    Returns:
        scalar loss (0 where nothing is masked).
    """
    logp_s = F.log_softmax(student_patch_logits.float() / student_temp, dim=-1)
    p_t = teacher_patch_p.detach()
    per_patch = torch.sum(-p_t * logp_s, dim=-1)                                  # (G * B, N)
    m = masks.to(per_patch.dtype)
    return (torch.sum(per_patch * m, dim=-1) / m.sum(dim=-1).clamp(min=1.0)).mean()


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


def random_patch_masks(n_images: int, grid: tuple[int, int], ratio: tuple[float, float], prob: float,
                       gen: torch.Generator, device=None) -> torch.Tensor:
    """(n_images, h * w) bool masks: with probability ``prob`` an image masks each patch independently with a
    ratio ``r ~ U(ratio)`` (iBOT masks half of the images, ratio 0.1-0.5; it uses block-wise masks, we mask single
    patches); the other images are unmasked."""
    n = grid[0] * grid[1]
    r = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(n_images, 1, generator=gen, device=device)
    masked = torch.rand(n_images, 1, generator=gen, device=device) < prob
    return (torch.rand(n_images, n, generator=gen, device=device) < r) & masked


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float,
                   batch_mean: torch.Tensor | None = None) -> torch.Tensor:
    """``C <- m C + (1 - m) mean(g_t(x))`` (paper Sec. 3.1, centering). Returns the new (1, K) center.

    ``batch_mean`` lets a distributed run pass the all-reduced mean over every process.
    """
    if batch_mean is None:
        batch_mean = teacher_logits.float().mean(dim=0, keepdim=True)
    return center * momentum + batch_mean * (1 - momentum)


# ----------------------------------------------------------------------------------------------------------
# Schedules and updates
# ----------------------------------------------------------------------------------------------------------

def teacher_temperature_schedule(warmup_temp: float, final_temp: float, warmup_epochs: int, epochs: int
                                 ) -> np.ndarray:
    """Per-epoch teacher temperature: linear from ``warmup_temp`` to ``final_temp`` over ``warmup_epochs``, then
    constant (DINO's ``warmup_teacher_temp`` / ``teacher_temp``). Shape (epochs,)."""
    warm = np.linspace(warmup_temp, final_temp, warmup_epochs) if warmup_epochs else np.array([])
    return np.concatenate([warm, np.full(max(epochs - warmup_epochs, 0), final_temp)])[:epochs]


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: ``theta_t <- m theta_t + (1 - m) theta_s`` over matching parameters (Sec. 3.1)."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)           # one fused kernel per op instead of one per parameter
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)


@torch.no_grad()
def clip_gradients_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip each parameter's gradient to norm ``max_norm`` separately (as DINO does): ``g <- g min(1, c / (|g| +
    1e-6))``. Returns the (P,) norms before clipping. No host synchronisation (it matters on a GPU)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch._foreach_norm(grads)
    for g, norm in zip(grads, norms):
        g.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return torch.stack(norms)


# ----------------------------------------------------------------------------------------------------------
# Projection head
# ----------------------------------------------------------------------------------------------------------

class DINOHead(nn.Module):
    """MLP (in -> hidden -> hidden -> bottleneck, GELU) -> L2 normalise -> weight-normalised linear to ``out_dim``.

    With ``norm_last_layer`` the weight-norm magnitude is fixed at 1 (not trained), which DINO found stabilises
    training. Input (N, in_dim), output (N, out_dim) logits.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 1024, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # Weight normalisation written out (w = g * v / ||v||) rather than the deprecated nn.utils.weight_norm.
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_v, std=0.02)
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.last_v, self.last_g) if p.requires_grad]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, bottleneck_dim) unit vectors: the MLP's output before the prototypes."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def prototype_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(..., bottleneck_dim) unit vectors -> (..., out_dim) logits against the weight-normalised prototypes."""
        weight = self.last_g * F.normalize(self.last_v, dim=1)
        return z @ weight.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prototype_logits(self.embed(x))


class StudentTeacherNet(nn.Module):
    """Backbone + head applied to a list of views; views of equal size are batched together (as in DINO).

    With ``mask_token`` (iBOT's patch loss) the first global views can also return their patch tokens' head
    outputs, with the patches where ``masks`` is true replaced by a learned mask token before the blocks.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead, mask_token: bool = False,
                 mae_decoder: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mask_token = nn.Parameter(torch.zeros(1, backbone.embed_dim)) if mask_token else None
        # MAE's decoder lives here (not beside the net) so that DDP, the optimiser, gradient clipping, the EMA and
        # the checkpoint all see it like any other parameter; the teacher's copy is never used.
        self.mae_decoder = mae_decoder

    def _tokens(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, H, W), mask (B, h * w) bool or None -> (B, prefix + h * w, D) final-norm tokens."""
        if mask is None:
            return self.backbone.forward_features(x)
        vit = self.backbone
        patches = vit.patch_embed(x)                       # (B, h, w, D) with dynamic_img_size, else (B, N, D)
        flat = patches.reshape(patches.shape[0], -1, patches.shape[-1])
        flat = torch.where(mask.unsqueeze(-1), self.mask_token.to(flat.dtype), flat)
        # timm's own embedding steps (the same ones forward_features runs), so positions and CLS match it exactly
        tokens = vit._pos_embed(flat.view_as(patches))
        tokens = vit.norm_pre(vit.patch_drop(tokens))
        return vit.norm(vit.blocks(tokens))

    def forward(self, views: list[torch.Tensor], masks: list[torch.Tensor] | None = None, patch_views: int = 0,
                patch_embeddings: bool = False, mae_inputs: tuple | None = None):
        """views: list of (B, 3, s_i, s_i) normalised crops -> (len(views) * B, out_dim) CLS logits, view-major.

        With ``patch_views = G > 0`` also return the (G * B, N, out_dim) patch logits of the first G views, whose
        patches are masked by ``masks`` (G tensors of (B, N) bool; None: unmasked); with ``patch_embeddings``
        their (G * B, N, bottleneck_dim) unit embeddings instead (``head.prototype_logits`` turns them into
        the logits).

        With ``mae_inputs = (images, pixels, mask_ratio, generator)`` (see :func:`nbseg.pretrain.mae.mae_loss`)
        return ``(that output, MAE loss)``; with no views, the MAE loss alone. One forward for both, so DDP
        reduces every gradient of the step once; the views go first, so their stochastic depth draws are those
        of a run without MAE."""
        if mae_inputs is not None:
            from nbseg.pretrain.mae import mae_loss

            out = self.forward(views, masks, patch_views, patch_embeddings) if views else None
            reconstruction = mae_loss(self.backbone, self.mae_decoder, *mae_inputs)
            return reconstruction if out is None else (out, reconstruction)
        outputs, patch_tokens, start = [], [], 0
        sizes = [v.shape[-1] for v in views]
        prefix = getattr(self.backbone, "num_prefix_tokens", 1)
        while start < len(views):
            end = start
            while end < len(views) and sizes[end] == sizes[start]:
                end += 1
            if start < patch_views:                      # the global views: same size, possibly masked
                end = min(end, patch_views)
                mask = torch.cat(masks[start:end]) if masks is not None else None
                tokens = self._tokens(torch.cat(views[start:end]), mask)
                patch_tokens.append(tokens[:, prefix:])
            else:
                tokens = self.backbone.forward_features(torch.cat(views[start:end]))
            outputs.append(tokens[:, 0])              # CLS token after the final norm
            start = end
        cls_logits = self.head(torch.cat(outputs))
        if not patch_views:
            return cls_logits
        patch_z = self.head.embed(torch.cat(patch_tokens))
        return cls_logits, patch_z if patch_embeddings else self.head.prototype_logits(patch_z)


