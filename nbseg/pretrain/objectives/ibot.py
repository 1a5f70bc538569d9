"""iBOT's masked patch self-distillation (Zhou et al., ICLR 2022), selected by ``patch_loss_weight > 0``: the
student's global views with some patches replaced by a learned mask token, distilled at those patches towards the
teacher's unmasked tokens, through DINO's head."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_patch_loss", "random_patch_masks"]


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


def random_patch_masks(n_images: int, grid: tuple[int, int], ratio: tuple[float, float], prob: float,
                       gen: torch.Generator, device=None) -> torch.Tensor:
    """(n_images, h * w) bool masks: with probability ``prob`` an image masks each patch independently with a
    ratio ``r ~ U(ratio)`` (iBOT masks half of the images, ratio 0.1-0.5; it uses block-wise masks, we mask single
    patches); the other images are unmasked."""
    n = grid[0] * grid[1]
    r = ratio[0] + (ratio[1] - ratio[0]) * torch.rand(n_images, 1, generator=gen, device=device)
    masked = torch.rand(n_images, 1, generator=gen, device=device) < prob
    return (torch.rand(n_images, n, generator=gen, device=device) < r) & masked
