"""Everything a pretraining run's loop works with, built fresh or restored from the run's checkpoint.

:func:`build_run` checks the config and the run folder (before any data is read), opens the images, builds student
and teacher (:func:`build_networks`), restores them, the optimiser and the centers on resume, wraps the student for
DDP, computes DINO's schedules and writes the run folder's config and provenance. It returns a :class:`PretrainRun`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nbseg.backbones import create_model, load_state_into, read_weights_file
from nbseg.config import to_dict
from nbseg.errors import ConfigError, NbsegError
from nbseg.io import sha256_file
from nbseg.pretrain.batched_augment import BatchedMultiCrop
from nbseg.pretrain.config import PretrainConfig, distils, saved_config_defaults, stored_config, uses_objectives
from nbseg.pretrain.dino import DINOHead, StudentTeacherNet, teacher_temperature_schedule
from nbseg.pretrain.objectives.mae import MAEDecoder
from nbseg.pretrain.objectives.network import PatchStudentTeacherNet
from nbseg.pretrain.views import DINOViewDataset, open_images, preload_images
from nbseg.train.distributed import init_distributed
from nbseg.train.logs import start_run_folder
from nbseg.train.optim import parameter_groups
from nbseg.train.run_folder import PRETRAIN, check_before_work, resumed_line
from nbseg.train.schedules import cosine_schedule

__all__ = ["CHECKPOINT", "PretrainRun", "build_networks", "build_run"]

CHECKPOINT = "checkpoint.pt"


@dataclass
class PretrainRun:
    """A run's state: config and places, process and device, data, networks, optimiser, centers and schedules."""

    cfg: PretrainConfig
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    images: object                         # the dataset (items with an ``image`` (3, H, W) in [0, 1])
    views: DINOViewDataset                 # per-image views (augment_on=cpu)
    bank: torch.Tensor | None              # the preloaded split (augment_on=device), else None
    batched_views: BatchedMultiCrop | None
    student: StudentTeacherNet
    teacher: StudentTeacherNet
    student_ddp: nn.Module                 # the student, DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    center: torch.Tensor                   # (1, K) DINO's center of the teacher's CLS logits
    center_patch: torch.Tensor             # (1, K) an objective's center of the teacher's patch logits
    start_step: int
    elapsed_before: float                  # seconds the run had trained before this start
    batches_per_epoch: int
    lr: np.ndarray                         # per-step schedules (DINO's cosine with warm-up) ...
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray               # ... and the per-epoch teacher temperature
    amp: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.batches_per_epoch


def build_networks(cfg: PretrainConfig) -> tuple[StudentTeacherNet, StudentTeacherNet]:
    """Student and teacher: same ViT + DINO head; the teacher starts as a copy and is never trained directly.

    With an optional objective both are :class:`~nbseg.pretrain.objectives.network.PatchStudentTeacherNet`
    (iBOT's mask token, MAE's decoder where asked for)."""
    torch.manual_seed(cfg.seed)
    student_vit = create_model(cfg.arch, pretrained=False, drop_path_rate=cfg.drop_path_rate)
    teacher_vit = create_model(cfg.arch, pretrained=False)
    if cfg.init_weights:
        load_state_into(student_vit, read_weights_file(cfg.init_weights), source=str(cfg.init_weights))
    dim = student_vit.embed_dim

    def net(vit):
        head = DINOHead(dim, cfg.out_dim, cfg.head_hidden_dim, cfg.bottleneck_dim, cfg.norm_last_layer)
        if not uses_objectives(cfg):
            return StudentTeacherNet(vit, head)
        decoder = None
        if cfg.mae_loss_weight:   # drawn after the head, as before the objectives moved (same initial weights)
            p = student_vit.patch_embed.patch_size[0]
            decoder = MAEDecoder(dim, (cfg.global_size // p) ** 2, p, cfg.mae_decoder_dim, cfg.mae_decoder_depth,
                                 cfg.mae_decoder_heads, prefix=getattr(student_vit, "num_prefix_tokens", 1))
        return PatchStudentTeacherNet(vit, head, mask_token=cfg.patch_loss_weight > 0, mae_decoder=decoder)

    student, teacher = net(student_vit), net(teacher_vit)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


def build_run(cfg: PretrainConfig, run_dir: str | Path, resume: bool = True) -> PretrainRun:
    """A new run in ``run_dir``, or the one it holds restored from its checkpoint (``resume``)."""
    cfg.validate()
    run_dir = Path(run_dir)
    rank, world, device = init_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    ckpt_path = run_dir / CHECKPOINT
    state = None
    if ckpt_path.exists() and resume:
        # A knob added since the run was written ran at its default (new knobs default to the old behaviour).
        state = check_before_work(run_dir, PRETRAIN, to_dict(cfg), saved_config_defaults(), stored_config)
    elif ckpt_path.exists() and not resume:
        raise NbsegError(f"{run_dir} already holds a run; pass resume or choose another folder")

    images = open_images(cfg)
    if len(images) < cfg.batch_size:
        raise ConfigError(f"{len(images)} images is fewer than one batch of {cfg.batch_size}")
    views = DINOViewDataset(images, cfg)
    batches_per_epoch = len(images) // cfg.batch_size

    student, teacher = build_networks(cfg)
    student.to(device)
    teacher.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(student))
    center = torch.zeros(1, cfg.out_dim, device=device)
    center_patch = torch.zeros(1, cfg.out_dim, device=device)
    start_step = 0
    if state is not None:
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        center = state["center"].to(device)
        center_patch = state.get("center_patch", center_patch.cpu()).to(device)
        start_step = int(state["step"])
        if rank == 0:
            print(resumed_line(ckpt_path, start_step, cfg.epochs * batches_per_epoch), flush=True)
    student_ddp = student
    if world > 1:
        # MAE alone leaves the DINO head without gradients, which DDP must be told about
        student_ddp = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not distils(cfg))

    lr = cfg.blr * cfg.batch_size / 256      # the linear scaling rule
    if rank == 0:
        start_run_folder(run_dir, cfg, lambda: {
            "world_size": world, "init_weights_sha256": sha256_file(cfg.init_weights) if cfg.init_weights else None})
    bank = preload_images(images, cfg.image_size, cfg.num_workers).to(device) if cfg.augment_on == "device" else None
    return PretrainRun(
        cfg=cfg, run_dir=run_dir, rank=rank, world=world, device=device, images=images, views=views, bank=bank,
        batched_views=BatchedMultiCrop(views.aug.cfg) if bank is not None else None,
        student=student, teacher=teacher, student_ddp=student_ddp, optimizer=optimizer, center=center,
        center_patch=center_patch, start_step=start_step,
        elapsed_before=float(state.get("seconds", 0.0)) if state else 0.0, batches_per_epoch=batches_per_epoch,
        lr=cosine_schedule(lr, cfg.min_lr, cfg.epochs, batches_per_epoch, cfg.warmup_epochs),
        weight_decay=cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, batches_per_epoch),
        momentum=cosine_schedule(cfg.momentum_teacher, 1.0, cfg.epochs, batches_per_epoch),
        teacher_temp=teacher_temperature_schedule(cfg.warmup_teacher_temp, cfg.teacher_temp,
                                                  cfg.warmup_teacher_temp_epochs, cfg.epochs),
        amp=cfg.amp and device.type == "cuda")
