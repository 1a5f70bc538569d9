"""The step's forward and losses when the config selects optional objectives beside (or instead of) DINO's CLS
loss; it takes the place of :func:`nbseg.pretrain.step.dino_step_losses` and returns the same
:class:`~nbseg.pretrain.step.StepLosses`.

``L = w_dino L_DINO + w_patch L_iBOT + w_nce L_InfoNCE + w_cross L_cross + w_mae L_MAE``, every term from one
forward of each network (so DDP reduces every gradient once). Each objective draws its randomness (masks, MAE's
view, InfoNCE's queries) from its own generator seeded by (seed, step, rank), so a resumed run repeats it.
"""
from __future__ import annotations

import torch

from nbseg.pretrain.build import PretrainRun
from nbseg.pretrain.config import PretrainConfig, distils
from nbseg.pretrain.dino import dino_loss
from nbseg.pretrain.objectives.dense import cross_view_patch_loss, dense_info_nce_loss, view_pair_positions
from nbseg.pretrain.objectives.ibot import masked_patch_loss, random_patch_masks
from nbseg.pretrain.objectives.mae import mae_view
from nbseg.pretrain.objectives.targets import teacher_probs
from nbseg.pretrain.step import N_GLOBAL, StepLosses
from nbseg.pretrain.views import ViewBatch, normalised
from nbseg.train.data import seed_of

__all__ = ["objective_step_losses", "objective_name"]


def objective_name(cfg: PretrainConfig) -> str:
    """What the run trains, for its progress bar: DINO, MAE or both."""
    if cfg.mae_loss_weight:
        return "DINO + MAE" if distils(cfg) else "MAE"
    return "DINO"


def _mae_inputs(run: PretrainRun, images: torch.Tensor, step: int) -> tuple:
    """MAE's view of the batch and its masking generator, as ``PatchStudentTeacherNet`` takes them."""
    cfg, device = run.cfg, run.device
    gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, step, run.rank, 29))
    pixels = mae_view(images, cfg.global_size, tuple(cfg.mae_scale), gen)
    return normalised([pixels], device)[0], pixels, cfg.mae_mask_ratio, gen


def objective_step_losses(run: PretrainRun, batch: ViewBatch, step: int, epoch: int) -> StepLosses:
    """The weighted sum of the selected losses on one batch (see the module's docstring)."""
    cfg, device = run.cfg, run.device
    patch_weight, cross_weight = cfg.patch_loss_weight, cfg.cross_view_loss_weight
    nce_weight, mae_weight = cfg.dense_contrastive_weight, cfg.mae_loss_weight
    distil_patches = bool(patch_weight or cross_weight)               # patch logits against teacher targets
    patch_views = N_GLOBAL if distil_patches or nce_weight else 0     # views whose patch tokens are trained
    mae_inputs = _mae_inputs(run, batch.images, step) if mae_weight else None
    if not distils(cfg):                     # MAE alone: one forward of the student, no views
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
            mae_loss = run.student_ddp([], mae_inputs=mae_inputs)
        return StepLosses(mae_weight * mae_loss, {"mae_loss": mae_loss})

    crops = normalised(batch.views, device)
    # the teacher's global views: the student's own, or the same crops recoloured (teacher_recolour)
    teacher_crops = crops[-N_GLOBAL:] if cfg.teacher_recolour else crops[:N_GLOBAL]
    if cfg.teacher_recolour:
        crops = crops[:-N_GLOBAL]
    grid = [cfg.global_size // p for p in run.student.backbone.patch_embed.patch_size]
    masks = None
    if patch_weight:
        mask_gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, step, run.rank, 19))
        masks = [random_patch_masks(c.shape[0], grid, tuple(cfg.mask_ratio), cfg.mask_prob, mask_gen, device)
                 for c in crops[:N_GLOBAL]]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
        with torch.no_grad():
            teacher_out = run.teacher(teacher_crops, patch_views=patch_views, patch_embeddings=bool(nce_weight))
        student_out = run.student_ddp(crops, masks, patch_views=patch_views, patch_embeddings=bool(nce_weight),
                                      mae_inputs=mae_inputs)
        if mae_weight:
            student_out, mae_loss = student_out
        if patch_views:
            (teacher_out, teacher_patch), (student_out, student_patch) = teacher_out, student_out
        if nce_weight:                       # the forward gave embeddings; the distillation needs logits
            teacher_z, student_z = teacher_patch, student_patch
            if distil_patches:
                with torch.no_grad():
                    teacher_patch = run.teacher.head.prototype_logits(teacher_z)
                student_patch = run.student.head.prototype_logits(student_z)

    temp, rule, distributed = float(run.teacher_temp[epoch]), cfg.teacher_targets, run.world > 1
    teacher_cls_p = teacher_probs(teacher_out, rule, run.center, temp, distributed)
    loss = cfg.dino_loss_weight * dino_loss(student_out, teacher_cls_p, N_GLOBAL, cfg.student_temp)
    parts = {}
    if distil_patches:
        teacher_patch_p = teacher_probs(teacher_patch, rule, run.center_patch, temp, distributed)
    if patch_weight:
        parts["patch_loss"] = masked_patch_loss(student_patch, teacher_patch_p, torch.cat(masks), cfg.student_temp)
        loss = loss + patch_weight * parts["patch_loss"]
    if cross_weight or nce_weight:
        positions, inside = view_pair_positions(batch.thetas, N_GLOBAL, grid)
    if nce_weight:
        query_gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, step, run.rank, 23))
        parts["contrastive_loss"] = dense_info_nce_loss(student_z, teacher_z, positions, inside, cfg.contrastive_temp,
                                                        cfg.contrastive_max_queries, query_gen)
        loss = loss + nce_weight * parts["contrastive_loss"]
    if cross_weight:
        parts["cross_view_loss"] = cross_view_patch_loss(student_patch, teacher_patch_p, positions, inside,
                                                         cfg.student_temp)
        loss = loss + cross_weight * parts["cross_view_loss"]
    if mae_weight:
        parts["mae_loss"] = mae_loss
        loss = loss + mae_weight * mae_loss
    return StepLosses(loss, parts, teacher_out, teacher_patch if distil_patches else None)
