"""One step of DINO pretraining, in the three parts the loop calls in order (Caron et al. 2021, Algorithm 1):

1. :func:`dino_step_losses` - both networks on the step's views and DINO's loss (Eq. 2) against the teacher's
   centred, sharpened targets; DINO as published. (:func:`nbseg.pretrain.objectives.step.objective_step_losses`
   takes its place when the config selects an optional objective.)
2. :func:`optimise_` - backward, DINO's per-parameter gradient clipping, the head's frozen last layer in the first
   epochs, the optimiser step and the teacher's EMA update.
3. :func:`update_centers_` - the center's EMA over the teacher's outputs (all-reduced over processes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from nbseg.errors import NbsegError
from nbseg.pretrain.build import PretrainRun
from nbseg.pretrain.dino import centered_teacher_probs, clip_gradients_, dino_loss, ema_update_, updated_center
from nbseg.pretrain.views import ViewBatch, normalised

__all__ = ["N_GLOBAL", "StepLosses", "dino_step_losses", "optimise_", "update_centers_"]

N_GLOBAL = 2   # global views per image: the teacher sees these only (DINO, Sec. 3.1)


@dataclass
class StepLosses:
    """What a step's forward gives the rest of the step.

    ``loss`` the total to minimise; ``parts`` the named extra losses it contains (the log's ``patch_loss``,
    ``mae_loss``, ... columns); ``teacher_cls`` (V_g * B, K) and ``teacher_patch`` (V_g * B, N, K) the teacher's
    logits the centers follow (None: that center is not updated)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_cls: torch.Tensor | None = None
    teacher_patch: torch.Tensor | None = None


def dino_step_losses(run: PretrainRun, batch: ViewBatch, step: int, epoch: int) -> StepLosses:
    """DINO's loss on one batch of multi-crop views: the teacher sees the two global views, the student every view,
    ``L = dino_loss(g_s(views), softmax((g_t(globals) - C) / tau_t(epoch)))`` (Eq. 2, Sec. 3.1)."""
    cfg = run.cfg
    crops = normalised(batch.views, run.device)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        with torch.no_grad():
            teacher_out = run.teacher(crops[:N_GLOBAL])
        student_out = run.student_ddp(crops)
    teacher_p = centered_teacher_probs(teacher_out, run.center, float(run.teacher_temp[epoch]))
    loss = cfg.dino_loss_weight * dino_loss(student_out, teacher_p, N_GLOBAL, cfg.student_temp)
    return StepLosses(loss, teacher_cls=teacher_out)


def optimise_(run: PretrainRun, loss: torch.Tensor, step: int, epoch: int) -> None:
    """One update of the student from ``loss``, then the teacher's EMA: ``theta_t <- m theta_t + (1 - m) theta_s``
    with m from DINO's cosine momentum schedule."""
    cfg, student = run.cfg, run.student
    if not math.isfinite(loss.item()):
        raise NbsegError(f"The loss is {loss.item()} at step {step}: lower blr or raise clip_grad; the "
                         f"last good checkpoint is {run.ckpt_path}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad > 0:
        clip_gradients_(student, cfg.clip_grad)
    if epoch < cfg.freeze_last_layer:          # DINO: the head's last layer is not trained in the first epoch(s)
        for p in student.head.last_layer_parameters():
            p.grad = None
    run.optimizer.step()
    ema_update_(run.teacher, student, float(run.momentum[step]))


def _global_mean(logits: torch.Tensor, world: int) -> torch.Tensor:
    """(N, K) -> (1, K) mean over this process's rows, averaged over the ``world`` processes."""
    mean = logits.float().mean(dim=0, keepdim=True)
    if world > 1:
        dist.all_reduce(mean)
        mean /= world
    return mean


def update_centers_(run: PretrainRun, losses: StepLosses) -> None:
    """``C <- m C + (1 - m) mean(g_t(x))`` over the global batch, for the CLS center and (an objective's) patch
    center."""
    m = run.cfg.center_momentum
    if losses.teacher_cls is not None:
        run.center = updated_center(run.center, losses.teacher_cls, m, _global_mean(losses.teacher_cls, run.world))
    if losses.teacher_patch is not None:
        patch_mean = _global_mean(losses.teacher_patch.flatten(0, 1), run.world)
        run.center_patch = updated_center(run.center_patch, losses.teacher_patch, m, patch_mean)
