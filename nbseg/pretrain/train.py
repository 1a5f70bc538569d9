"""``nbseg pretrain``: DINO self-distillation of a ViT on any image collection, with exact resume.

A run folder holds ``config.yaml`` (the resolved config), ``provenance.json``, ``checkpoint.pt`` (atomic; student,
teacher, optimiser, center, step), ``log.csv`` (one row per logged step) and ``loss_curve.png``.

:func:`pretrain` is the loop; its pieces live beside it: :mod:`~nbseg.pretrain.config` (the knobs),
:mod:`~nbseg.pretrain.views` (the images and their multi-crop views), :mod:`~nbseg.pretrain.build` (networks,
optimiser, schedules, resume), :mod:`~nbseg.pretrain.step` (DINO's step: losses, update, centers),
:mod:`~nbseg.pretrain.objectives` (the optional objectives, off by default) and :mod:`~nbseg.pretrain.export`.

Exact resume: the order of the images in epoch ``e`` comes from a generator seeded by (seed, e), the views of image
``i`` in epoch ``e`` from (seed, e, i), and the stochastic depth of step ``s`` from (seed, s, rank). A run stopped at
any step and resumed from its checkpoint therefore computes the same updates as an uninterrupted run (tested on CPU).

The loop is DINO's own (student/teacher EMA, center, per-parameter clipping, frozen last layer, its checkpoint
layout), but its pieces are those of :mod:`nbseg.train` that every method's loop uses: schedules, parameter groups,
epoch order / item seeds / rank sharding, process group and device, CSV log and loss curve, resume-config check.

Distributed: launched with ``torchrun --nproc_per_node N -m nbseg pretrain ...`` each process takes a slice of every
global batch, the student is wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU) and the center is
all-reduced. AMP: bf16 autocast on CUDA.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist

from nbseg.config import to_dict
from nbseg.io import atomic_torch_save, checkpoint_resume_hint, save_figure
from nbseg.progress import tqdm
from nbseg.pretrain.build import CHECKPOINT, PretrainRun, build_networks, build_run
from nbseg.pretrain.config import PretrainConfig, distils, stored_config, uses_objectives
from nbseg.pretrain.export import export_teacher
from nbseg.pretrain.objectives.step import objective_name, objective_step_losses
from nbseg.pretrain.step import StepLosses, dino_step_losses, optimise_, update_centers_
from nbseg.pretrain.views import collate_views, device_view_batches
from nbseg.train.data import epoch_batches, epoch_loader, rank_batches, step_seed
from nbseg.train.logs import curves_figure, read_log, write_log
from nbseg.train.optim import apply_schedule, parameter_groups

# PretrainConfig, export_teacher, build_networks, stored_config, epoch_batches, parameter_groups: re-exported for
# the callers that import them from here (tests, tools, `nbseg pretrain`).
__all__ = ["PretrainConfig", "pretrain", "export_teacher", "build_networks", "stored_config", "epoch_batches",
           "parameter_groups", "CHECKPOINT", "LOG_FIELDS"]

LOG_FIELDS = ["step", "epoch", "loss", "patch_loss", "cross_view_loss", "contrastive_loss", "mae_loss", "lr",
              "weight_decay", "momentum", "teacher_temp", "seconds"]


def epoch_view_batches(run: PretrainRun, epoch: int, first_batch: int, step: int):
    """This process's :class:`~nbseg.pretrain.views.ViewBatch` es of ``epoch`` from its ``first_batch`` on (``step``
    is the global step of that batch), made per image in DataLoader workers or on the device."""
    cfg = run.cfg
    per_rank = rank_batches(len(run.images), cfg.batch_size, cfg.seed, epoch, run.rank, run.world, start=first_batch)
    if run.bank is None:
        return epoch_loader(run.views, per_rank, collate_views, cfg.num_workers, cfg.seed, epoch)
    # without any distillation loss (MAE alone) no views are made
    return device_view_batches(run.bank, per_rank, run.batched_views if distils(cfg) else None, cfg.seed, step,
                               run.rank, cfg.teacher_recolour)


def log_row(run: PretrainRun, step: int, epoch: int, losses: StepLosses, seconds: float) -> dict:
    """The log.csv row after ``step`` steps (the schedules' values are those the step used)."""
    return {"step": step, "epoch": epoch, "loss": f"{losses.loss.item():.6f}",
            **{name: f"{value.item():.6f}" for name, value in losses.parts.items()},
            "lr": f"{run.lr[step - 1]:.6g}", "weight_decay": f"{run.weight_decay[step - 1]:.6g}",
            "momentum": f"{run.momentum[step - 1]:.6g}", "teacher_temp": f"{run.teacher_temp[epoch]:.4g}",
            "seconds": f"{seconds:.1f}"}


def save_checkpoint(run: PretrainRun, step: int, seconds: float, rows: list[dict]) -> None:
    """The checkpoint (DINO's layout) and the log rows it covers, each written atomically; rank 0 only."""
    if not run.is_main:
        return
    atomic_torch_save({"student": run.student.state_dict(), "teacher": run.teacher.state_dict(),
                       "optimizer": run.optimizer.state_dict(), "center": run.center.cpu(),
                       "center_patch": run.center_patch.cpu(), "step": step, "seconds": seconds,
                       "config": to_dict(run.cfg), "arch": run.cfg.arch}, run.ckpt_path,
                      resume=checkpoint_resume_hint(run.ckpt_path))
    write_log(run.run_dir / "log.csv", rows, LOG_FIELDS)


def loss_curve_figure(rows: list[dict], title: str):
    return curves_figure(rows, {"DINO loss": "loss"}, title)


def pretrain(cfg: PretrainConfig, run_dir: str | Path, *, progress: bool = True, resume: bool = True) -> dict:
    """Train (or resume) a DINO run in ``run_dir``. Returns a summary dict (steps, final loss, seconds)."""
    run = build_run(cfg, run_dir, resume)
    step_losses = objective_step_losses if uses_objectives(cfg) else dino_step_losses
    # Keep only log rows the checkpoint covers, so a resumed log has no duplicated or orphaned steps.
    rows = read_log(run.run_dir / "log.csv", run.start_step) if run.is_main else []
    stop_step = min(run.total_steps, cfg.max_steps) if cfg.max_steps is not None else run.total_steps
    bar = tqdm(total=stop_step, initial=run.start_step, desc=objective_name(cfg), unit="step",
               disable=not (progress and run.is_main))
    t_start = time.perf_counter()
    step, loss_value = run.start_step, float("nan")
    run.student.train()
    run.teacher.eval()
    while step < stop_step:
        epoch, it_in_epoch = divmod(step, run.batches_per_epoch)
        for batch in epoch_view_batches(run, epoch, it_in_epoch, step):
            if step >= stop_step:
                break
            torch.manual_seed(step_seed(cfg.seed, step, run.rank))  # stochastic depth of this step
            apply_schedule(run.optimizer, run.lr[step], run.weight_decay[step])
            losses = step_losses(run, batch, step, epoch)
            optimise_(run, losses.loss, step, epoch)
            update_centers_(run, losses)
            step += 1
            loss_value = losses.loss.item()
            seconds = run.elapsed_before + time.perf_counter() - t_start
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{run.lr[step - 1]:.2e}",
                            mom=f"{run.momentum[step - 1]:.4f}", epoch=epoch)
            if step % cfg.log_every == 0 or step == stop_step:
                rows.append(log_row(run, step, epoch, losses, seconds))
            if step % cfg.checkpoint_every == 0 or step == stop_step:
                save_checkpoint(run, step, seconds, rows)
    bar.close()
    seconds = run.elapsed_before + time.perf_counter() - t_start
    if run.is_main:
        save_checkpoint(run, step, seconds, rows)
        if rows:
            title = f"DINO pretraining of {cfg.arch} on {cfg.data}/{cfg.split} (seed {cfg.seed})"
            save_figure(loss_curve_figure(rows, title), run.run_dir / "loss_curve.png")
    if run.world > 1:
        dist.barrier()
    summary = {"steps": step, "total_steps": run.total_steps, "loss": loss_value, "seconds": seconds,
               "run_dir": str(run.run_dir), "finished": step >= run.total_steps}
    if run.device.type == "cuda":
        summary["max_memory_gib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**30, 3)
        summary["device_name"] = torch.cuda.get_device_name(run.device)
    return summary
