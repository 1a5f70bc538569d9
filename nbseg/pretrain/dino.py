"""DINO self-distillation (Caron et al., ICCV 2021, "Emerging Properties in Self-Supervised Vision Transformers").

The pieces of the method as published, as pure functions and small modules, each named after what it computes:

* :func:`dino_loss` - cross-entropy between the teacher's target distribution of each global view and the
  student distribution of every *other* view (paper Eq. 2 and Algorithm 1).
* :func:`centered_teacher_probs` - the targets: the teacher's output centred and sharpened (Sec. 3.1).
* :func:`updated_center` - the EMA of the teacher's batch mean output that prevents collapse (centering).
* :func:`cosine_schedule` - DINO's per-iteration cosine schedule with linear warm-up (lr, weight decay, momentum);
  it lives in :mod:`nbseg.train.schedules`, shared with every method's training loop.
* :func:`teacher_temperature_schedule` - the linear teacher-temperature warm-up, then constant.
* :func:`ema_update_` - teacher <- m * teacher + (1 - m) * student.
* :func:`clip_gradients_` - DINO clips each parameter's gradient norm separately.
* :class:`DINOHead` - the projection head: 3-layer MLP -> L2 normalisation -> weight-normalised last layer
  (its norm fixed at 1, ``norm_last_layer=True``).
* :class:`StudentTeacherNet` - backbone + head over a list of multi-crop views.
* DINO's multi-crop views (:class:`~nbseg.data.multicrop.MultiCropAugmentation`, re-exported here) live with the
  other multi-crop code in :mod:`nbseg.data.multicrop`.

The optional objectives nbseg tried beside DINO (iBOT's masked patch loss, cross-view and dense contrastive patch
losses, Sinkhorn-Knopp targets, MAE) are in :mod:`nbseg.pretrain.objectives`; nothing here depends on them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nbseg.data.multicrop import MultiCropAugmentation, MultiCropConfig, random_resized_crop_box
from nbseg.train.schedules import cosine_schedule

__all__ = ["dino_loss", "centered_teacher_probs", "updated_center", "cosine_schedule", "teacher_temperature_schedule",
           "ema_update_", "clip_gradients_", "DINOHead", "StudentTeacherNet", "same_size_runs", "MultiCropConfig",
           "MultiCropAugmentation", "random_resized_crop_box"]


# ----------------------------------------------------------------------------------------------------------
# Loss and centering
# ----------------------------------------------------------------------------------------------------------

def centered_teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temp: float
                           ) -> torch.Tensor:
    """DINO's teacher targets (Sec. 3.1, centering and sharpening): ``P_t = softmax((g_t(x) - C) / tau_t)``.

    Args: teacher_logits (..., K); center (1, K). Returns (..., K) probabilities, without gradient."""
    return F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1).detach()


def dino_loss(student_logits: torch.Tensor, teacher_p: torch.Tensor, n_global: int, student_temp: float
              ) -> torch.Tensor:
    """DINO's multi-crop distillation loss (Eq. 2, Algorithm 1).

    ``P_s = softmax(g_s(x') / tau_s)`` for each view and ``L = mean over pairs (x in globals, x' in all views,
    x' != x) of  -sum_k P_t(x)[k] log P_s(x')[k]``, averaged over the batch, where ``P_t`` are the teacher's
    targets (:func:`centered_teacher_probs`: centred and sharpened; or Sinkhorn-Knopp,
    :mod:`nbseg.pretrain.objectives.targets`).

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
    """Backbone + head applied to a list of views; views of equal size are batched together (as in DINO)."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """views: list of (B, 3, s_i, s_i) normalised crops -> (len(views) * B, out_dim) CLS logits, view-major."""
        cls_tokens = [self.backbone.forward_features(torch.cat(group))[:, 0] for group in same_size_runs(views)]
        return self.head(torch.cat(cls_tokens))        # the CLS token after the final norm, through the head


def same_size_runs(views: list[torch.Tensor], split_at: int = 0) -> list[list[torch.Tensor]]:
    """Consecutive views of equal size, grouped (one backbone call each); a group never straddles ``split_at``
    (the masked global views of :class:`nbseg.pretrain.objectives.network.PatchStudentTeacherNet`)."""
    groups, start = [], 0
    sizes = [v.shape[-1] for v in views]
    while start < len(views):
        end = start
        while end < len(views) and sizes[end] == sizes[start]:
            end += 1
        if start < split_at:
            end = min(end, split_at)
        groups.append(views[start:end])
        start = end
    return groups
