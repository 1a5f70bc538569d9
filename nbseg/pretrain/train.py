"""``nbseg pretrain``: DINO self-distillation of a ViT on any image collection, with exact resume.

A run folder holds ``config.yaml`` (the resolved config), ``provenance.json``, ``checkpoint.pt`` (atomic; student,
teacher, optimiser, center, step), ``log.csv`` (one row per logged step) and ``loss_curve.png``.

Exact resume: the order of the images in epoch ``e`` comes from a generator seeded by (seed, e), the views of image
``i`` in epoch ``e`` from (seed, e, i), and the stochastic depth of step ``s`` from (seed, s, rank). A run stopped at
any step and resumed from its checkpoint therefore computes the same updates as an uninterrupted run (tested on CPU).

The loop is DINO's own (student/teacher EMA, center, per-parameter clipping, frozen last layer, its checkpoint
layout), but its pieces are those of :mod:`nbseg.train` that every method's loop uses: schedules, parameter groups,
epoch order / item seeds / rank sharding, process group and device, CSV log and loss curve, resume-config check.

Distributed: launched with ``torchrun --nproc_per_node N -m nbseg pretrain ...`` each process takes a slice of every
global batch, the student is wrapped in DistributedDataParallel (NCCL on CUDA, gloo on CPU) and the center is
all-reduced. AMP: bf16 autocast on CUDA.

Length: over 400 lines because :func:`pretrain` is still one function with the optional objectives beside DINO's
core; splitting it into build / step / loop is open (issue 14).
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from nbseg.config import to_dict
from nbseg.errors import ConfigError, NbsegError
from nbseg.io import atomic_torch_save, atomic_write_bytes, checkpoint_resume_hint
from nbseg.pretrain.batched_augment import BatchedMultiCrop, corresponding_positions
from nbseg.pretrain.dino import (DINOHead, MultiCropAugmentation, MultiCropConfig, StudentTeacherNet,
                                 clip_gradients_, cross_view_patch_loss, dense_info_nce_loss, dino_loss,
                                 ema_update_, masked_patch_loss,
                                 random_patch_masks, teacher_probs, teacher_temperature_schedule, updated_center)
from nbseg.pretrain.mae import mae_view
from nbseg.train.data import epoch_batches, epoch_loader, item_seed, rank_batches, seed_of, step_seed
from nbseg.train.distributed import init_distributed
from nbseg.train.logs import curves_figure, read_log, start_run_folder, write_log
from nbseg.train.optim import apply_schedule, parameter_groups
from nbseg.train.schedules import cosine_schedule

__all__ = ["PretrainConfig", "pretrain", "export_teacher", "epoch_batches", "parameter_groups"]

CHECKPOINT = "checkpoint.pt"
LOG_FIELDS = ["step", "epoch", "loss", "patch_loss", "cross_view_loss", "contrastive_loss", "mae_loss", "lr",
              "weight_decay", "momentum", "teacher_temp", "seconds"]


@dataclass
class PretrainConfig:
    """Every knob of a DINO run. Defaults follow the DINO paper / released ViT-S recipe unless marked (world)."""

    RENAMED_KEYS = {"root": "data_root"}  # old name -> name now (one name for the dataset root across commands)

    # data
    data: str = "world"                  # a dataset name nbseg knows (world, voc, cocostuff27, ...) or "folder"
    data_root: str | None = None         # dataset root (None: the default world root); `nbseg train` names it so too
    split: str = "train"
    image_size: int = 96                 # images are resized (short side) to this before cropping
    # model
    arch: str = "nbseg_vit_tiny_patch8"  # any timm ViT name
    init_weights: str | None = None      # start both backbones from this weights file (e.g. DINO ImageNet weights
                                         # adapted to a new domain); the projection head always starts fresh
    drop_path_rate: float = 0.1
    out_dim: int = 2048                  # DINO uses 65536 on ImageNet; the world has ~13 concepts (world)
    head_hidden_dim: int = 1024
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    # multi-crop (sizes scaled to the data: 224/96 on ImageNet)
    global_size: int = 64
    local_size: int = 32
    n_local: int = 4
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.25)
    colour_jitter: float = 0.4           # DINO's brightness / contrast / saturation strength (p = 0.8)
    hue: float = 0.1                     # DINO's max hue shift; the world needs 0.5: its colours carry no class
    grayscale_p: float = 0.2
    colour_lut_p: float = 0.0            # probability of a random smooth colour look-up table per view, before the
    colour_lut_size: int = 4             # jitter (needs augment_on=device; nbseg's augmentation for worlds whose
                                         # colours carry no class: views then share patterns, not colours)
    augment_on: str = "cpu"              # cpu: per-image views in DataLoader workers (exact for any worker count);
                                         # device: the split is preloaded on the training device and each batch's
                                         # views are made there at once (nbseg.pretrain.batched_augment; for GPUs)
    # patch-level self-distillation (iBOT, Zhou et al. 2022); 0 = DINO as published
    patch_loss_weight: float = 0.0       # weight of iBOT's masked patch loss beside DINO's CLS loss
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_prob: float = 0.5               # fraction of global views that are masked at all
    teacher_recolour: bool = False       # the teacher sees the student's global crops with a new photometric draw,
                                         # so patch targets cannot be matched by colour (needs augment_on=device;
                                         # nbseg's own variant, not in DINO or iBOT)
    cross_view_loss_weight: float = 0.0  # patch self-distillation across the two global views at corresponding
                                         # image points, each view with its own colour draw (needs
                                         # augment_on=device; nbseg's variant: DINO / iBOT's loss, DenseCL's pairs)
    dense_contrastive_weight: float = 0.0  # InfoNCE between the two global views' patch embeddings at
                                         # corresponding points, other images' patches as negatives, the teacher
                                         # as key encoder (MoCo v3 / DenseCL; needs augment_on=device)
    contrastive_temp: float = 0.2
    contrastive_max_queries: int = 4096  # patches per view pair in the InfoNCE similarity matrix
    dino_loss_weight: float = 1.0        # weight of DINO's CLS loss; 0 with no other distillation loss: no teacher
                                         # forward at all (e.g. MAE alone; the teacher is then the student's EMA)
    mae_loss_weight: float = 0.0         # weight of MAE's masked patch reconstruction (He et al., 2022), see
                                         # nbseg.pretrain.mae (needs augment_on=device)
    mae_mask_ratio: float = 0.75
    mae_scale: tuple[float, float] = (0.2, 1.0)  # MAE view: random resized crop area, flip, no colour change
    mae_decoder_dim: int = 128           # the light decoder (the paper's is 512-d, 8 blocks, for ViT-L at 224 px)
    mae_decoder_depth: int = 2
    mae_decoder_heads: int = 4
    # optimisation
    epochs: int = 100
    batch_size: int = 64                 # global batch over all processes
    blr: float = 0.0005                  # lr = blr * batch_size / 256 (linear scaling rule)
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    freeze_last_layer: int = 1           # epochs during which the head's last layer gets no update
    # distillation
    momentum_teacher: float = 0.996
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    teacher_targets: str = "center"      # center: DINO's centering + sharpening; sinkhorn: Sinkhorn-Knopp
                                         # equipartition (SwAV / DINOv2), which cannot settle on a uniform teacher
    # run
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"                 # auto | cpu | cuda
    amp: bool = True                     # bf16 autocast, used on CUDA only
    log_every: int = 10                  # steps between log rows
    checkpoint_every: int = 50           # steps between checkpoints (and one at the last step)
    max_steps: int | None = None         # stop (with a checkpoint) after this global step: budgeted or test runs

    def validate(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2")
        if self.global_size % 8 or self.local_size % 8:
            raise ConfigError(f"crop sizes must be multiples of the patch size (8 or 16); got "
                              f"{self.global_size} / {self.local_size}")
        if self.epochs < 1:
            raise ConfigError("epochs must be >= 1")
        if self.teacher_targets not in ("center", "sinkhorn"):
            raise ConfigError(f"teacher_targets must be 'center' or 'sinkhorn', not {self.teacher_targets!r}")
        if self.augment_on not in ("cpu", "device"):
            raise ConfigError(f"augment_on must be 'cpu' or 'device', not {self.augment_on!r}")
        if self.teacher_recolour and self.augment_on != "device":
            raise ConfigError("teacher_recolour needs augment_on=device")
        if self.colour_lut_p and self.augment_on != "device":
            raise ConfigError("colour_lut_p needs augment_on=device (the per-image path has no colour table)")
        if self.colour_lut_p and self.colour_lut_size < 2:
            raise ConfigError("colour_lut_size must be >= 2")
        if self.cross_view_loss_weight and self.augment_on != "device":
            raise ConfigError("cross_view_loss_weight needs augment_on=device (the crop geometry is known there)")
        if self.dense_contrastive_weight and self.augment_on != "device":
            raise ConfigError("dense_contrastive_weight needs augment_on=device (the crop geometry is known there)")
        if self.cross_view_loss_weight < 0 or self.dense_contrastive_weight < 0:
            raise ConfigError("cross_view_loss_weight and dense_contrastive_weight must be >= 0")
        if self.patch_loss_weight < 0 or not 0 <= self.mask_prob <= 1:
            raise ConfigError("patch_loss_weight must be >= 0 and mask_prob in [0, 1]")
        if self.dino_loss_weight < 0 or self.mae_loss_weight < 0:
            raise ConfigError("dino_loss_weight and mae_loss_weight must be >= 0")
        if self.mae_loss_weight and self.augment_on != "device":
            raise ConfigError("mae_loss_weight needs augment_on=device (the MAE view is cut from the preloaded batch)")
        if not 0 <= self.mae_mask_ratio < 1:
            raise ConfigError(f"mae_mask_ratio must be in [0, 1), got {self.mae_mask_ratio}")
        if not (self.dino_loss_weight or self.mae_loss_weight or self.patch_loss_weight
                or self.cross_view_loss_weight or self.dense_contrastive_weight):
            raise ConfigError("every loss weight is 0: nothing to train (set dino_loss_weight or mae_loss_weight)")


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------

def open_images(cfg: PretrainConfig):
    """The image collection a run trains on: a dataset nbseg knows, or a folder of images."""
    from nbseg.data import load_dataset

    if cfg.data == "world" and cfg.data_root is None:
        from nbseg.world import ensure_world

        ensure_world()
    return load_dataset(cfg.data, root=cfg.data_root, split=cfg.split)


class DINOViewDataset(torch.utils.data.Dataset):
    """Item ``(i, seed)`` -> the list of views of image ``i``, drawn from a generator seeded by ``seed`` (the loop
    passes :func:`nbseg.train.data.item_seed` (seed, epoch, i)); a bare ``i`` uses (config seed, ``self.epoch``, i).
    """

    def __init__(self, images, cfg: PretrainConfig):
        self.images = images
        self.cfg = cfg
        self.aug = MultiCropAugmentation(MultiCropConfig(
            global_size=cfg.global_size, local_size=cfg.local_size, n_local=cfg.n_local,
            global_scale=tuple(cfg.global_scale), local_scale=tuple(cfg.local_scale),
            colour_jitter=cfg.colour_jitter, hue=cfg.hue, grayscale_p=cfg.grayscale_p,
            colour_lut_p=cfg.colour_lut_p, colour_lut_size=cfg.colour_lut_size))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple[int, int]) -> list[torch.Tensor]:
        i, seed = item if isinstance(item, tuple) else (item, item_seed(self.cfg.seed, self.epoch, item))
        image = self.images[i].image
        short = min(image.shape[-2:])
        if short != self.cfg.image_size:
            from torchvision.transforms.v2 import functional as TF

            image = TF.resize(image, self.cfg.image_size, antialias=True)
        return self.aug(image, torch.Generator().manual_seed(seed))


def _collate_views(batch: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack(views) for views in zip(*batch)]


class _SquareImages(torch.utils.data.Dataset):
    """Image ``i`` resized (short side) to ``size`` and centre-cropped to a square, as uint8 (3, size, size)."""

    def __init__(self, images, size: int):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        image = self.images[i].image
        if min(image.shape[-2:]) != self.size:
            image = TF.resize(image, self.size, antialias=True)
        image = TF.center_crop(image, [self.size, self.size])
        return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def preload_images(images, size: int, num_workers: int = 0) -> torch.Tensor:
    """The whole split as one (N, 3, size, size) uint8 tensor (for ``augment_on=device``; a non-square image
    keeps its centre square, where the per-image path would crop from the whole rectangle)."""
    loader = torch.utils.data.DataLoader(_SquareImages(images, size), batch_size=64, num_workers=num_workers)
    return torch.cat(list(loader))


def device_view_batches(bank: torch.Tensor, batches, augment: BatchedMultiCrop | None, seed: int, first_step: int,
                        rank: int, recolour_globals: bool = False):
    """The views of each batch of ``(index, item_seed)`` keys, made on ``bank``'s device; the generator of
    step ``first_step + k`` is seeded by (seed, step, rank), so a resumed run draws the same views.

    Yields ``(views, thetas, images)``: the list of views, the two global crops' (B, 2, 3) maps and the batch's
    images (B, 3, S, S) in [0, 1] (for MAE's own view); with ``augment=None``, views and thetas are None."""
    for k, batch in enumerate(batches):
        index = torch.tensor([i for i, _ in batch], device=bank.device)
        images = bank[index].float() / 255
        if augment is None:
            yield None, None, images
            continue
        gen = torch.Generator(device=bank.device).manual_seed(seed_of(seed, first_step + k, rank, 17))
        views, thetas = augment(images, gen, recolour_globals, return_thetas=True)
        yield views, thetas, images


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------

def build_networks(cfg: PretrainConfig) -> tuple[StudentTeacherNet, StudentTeacherNet]:
    """Student and teacher: same ViT + DINO head; the teacher starts as a copy and is never trained directly."""
    from nbseg.backbones import create_model

    torch.manual_seed(cfg.seed)
    student_vit = create_model(cfg.arch, pretrained=False, drop_path_rate=cfg.drop_path_rate)
    teacher_vit = create_model(cfg.arch, pretrained=False)
    if cfg.init_weights:
        from nbseg.backbones import load_state_into, read_weights_file

        load_state_into(student_vit, read_weights_file(cfg.init_weights), source=str(cfg.init_weights))
    dim = student_vit.embed_dim
    patch = cfg.patch_loss_weight > 0

    def mae_decoder():
        if not cfg.mae_loss_weight:
            return None
        from nbseg.pretrain.mae import MAEDecoder

        p = student_vit.patch_embed.patch_size[0]
        return MAEDecoder(dim, (cfg.global_size // p) ** 2, p, cfg.mae_decoder_dim, cfg.mae_decoder_depth,
                          cfg.mae_decoder_heads, prefix=getattr(student_vit, "num_prefix_tokens", 1))

    student = StudentTeacherNet(student_vit, DINOHead(dim, cfg.out_dim, cfg.head_hidden_dim, cfg.bottleneck_dim,
                                                       cfg.norm_last_layer), mask_token=patch,
                                mae_decoder=mae_decoder())
    teacher = StudentTeacherNet(teacher_vit, DINOHead(dim, cfg.out_dim, cfg.head_hidden_dim, cfg.bottleneck_dim,
                                                       cfg.norm_last_layer), mask_token=patch,
                                mae_decoder=mae_decoder())
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------

def loss_curve_figure(rows: list[dict], title: str):
    return curves_figure(rows, {"DINO loss": "loss"}, title)


def pretrain(cfg: PretrainConfig, run_dir: str | Path, *, progress: bool = True, resume: bool = True) -> dict:
    """Train (or resume) a DINO run in ``run_dir``. Returns a summary dict (steps, final loss, seconds)."""
    from nbseg.progress import tqdm

    cfg.validate()
    run_dir = Path(run_dir)
    rank, world, device = init_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    is_main = rank == 0

    ckpt_path = run_dir / CHECKPOINT
    state = None
    if ckpt_path.exists() and resume:
        from nbseg.train.run_folder import PRETRAIN, check_before_work

        # A knob added since the run was written ran at its default (new knobs default to the old behaviour).
        state = check_before_work(run_dir, PRETRAIN, to_dict(cfg), saved_config_defaults(), stored_config)
    elif ckpt_path.exists() and not resume:
        raise NbsegError(f"{run_dir} already holds a run; pass resume or choose another folder")

    images = open_images(cfg)
    if len(images) < cfg.batch_size:
        raise ConfigError(f"{len(images)} images is fewer than one batch of {cfg.batch_size}")
    views = DINOViewDataset(images, cfg)
    batches_per_epoch = len(images) // cfg.batch_size
    total_steps = cfg.epochs * batches_per_epoch
    n_global = 2

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
        if is_main:
            from nbseg.train.run_folder import resumed_line

            print(resumed_line(ckpt_path, start_step, total_steps), flush=True)
    student_ddp = student
    if world > 1:
        # MAE alone leaves the DINO head without gradients, which DDP must be told about
        no_distillation = not (cfg.dino_loss_weight or cfg.patch_loss_weight or cfg.cross_view_loss_weight
                               or cfg.dense_contrastive_weight)
        student_ddp = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=no_distillation)

    lr = cfg.blr * cfg.batch_size / 256
    lr_sched = cosine_schedule(lr, cfg.min_lr, cfg.epochs, batches_per_epoch, cfg.warmup_epochs)
    wd_sched = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, batches_per_epoch)
    mom_sched = cosine_schedule(cfg.momentum_teacher, 1.0, cfg.epochs, batches_per_epoch)
    temp_sched = teacher_temperature_schedule(cfg.warmup_teacher_temp, cfg.teacher_temp,
                                              cfg.warmup_teacher_temp_epochs, cfg.epochs)
    amp = cfg.amp and device.type == "cuda"

    log_path = run_dir / "log.csv"
    if is_main:
        from nbseg.io import sha256_file

        start_run_folder(run_dir, cfg, lambda: {
            "world_size": world, "init_weights_sha256": sha256_file(cfg.init_weights) if cfg.init_weights else None})
    # Keep only log rows the checkpoint covers, so a resumed log has no duplicated or orphaned steps.
    rows = read_log(log_path, start_step) if is_main else []
    elapsed_before = float(state.get("seconds", 0.0)) if state else 0.0

    def save_checkpoint(step: int, seconds: float) -> None:
        if not is_main:
            return
        atomic_torch_save({"student": student.state_dict(), "teacher": teacher.state_dict(),
                           "optimizer": optimizer.state_dict(), "center": center.cpu(),
                           "center_patch": center_patch.cpu(), "step": step,
                           "seconds": seconds, "config": to_dict(cfg), "arch": cfg.arch}, ckpt_path,
                          resume=checkpoint_resume_hint(ckpt_path))
        write_log(log_path, rows, LOG_FIELDS)

    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps is not None else total_steps
    bank = None
    if cfg.augment_on == "device":
        bank = preload_images(images, cfg.image_size, cfg.num_workers).to(device)
        batched_views = BatchedMultiCrop(views.aug.cfg)
    patch_weight, cross_weight = cfg.patch_loss_weight, cfg.cross_view_loss_weight
    nce_weight = cfg.dense_contrastive_weight
    distil_patches = bool(patch_weight or cross_weight)               # patch logits against teacher targets
    patch_views = n_global if distil_patches or nce_weight else 0     # views whose patch tokens are trained
    needs_thetas = bool(cross_weight or nce_weight)
    dino_weight, mae_weight = cfg.dino_loss_weight, cfg.mae_loss_weight
    # Without any distillation loss (MAE alone) neither network sees DINO's views and no views are made.
    distil = bool(dino_weight or distil_patches or nce_weight)
    grid = [cfg.global_size // p for p in student.backbone.patch_embed.patch_size]
    objective = "DINO + MAE" if distil and mae_weight else ("DINO" if distil else "MAE")
    bar = tqdm(total=stop_step, initial=start_step, desc=objective, unit="step", disable=not (progress and is_main))
    t_start = time.perf_counter()
    step = start_step
    loss_value = float("nan")
    student.train()
    teacher.eval()
    while step < stop_step:
        epoch, it_in_epoch = divmod(step, batches_per_epoch)
        per_rank = rank_batches(len(images), cfg.batch_size, cfg.seed, epoch, rank, world, start=it_in_epoch)
        if bank is None:
            loader = epoch_loader(views, per_rank, _collate_views, cfg.num_workers, cfg.seed, epoch)
        else:
            loader = device_view_batches(bank, per_rank, batched_views if distil else None, cfg.seed, step, rank,
                                         cfg.teacher_recolour)
        for crops in loader:
            if bank is not None:
                crops, thetas, batch_images = crops
            if step >= stop_step:
                break
            torch.manual_seed(step_seed(cfg.seed, step, rank))  # stochastic depth of this step
            apply_schedule(optimizer, lr_sched[step], wd_sched[step])
            mae_inputs = None
            if mae_weight:
                mae_gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, step, rank, 29))
                mae_pixels = mae_view(batch_images, cfg.global_size, tuple(cfg.mae_scale), mae_gen)
                mae_inputs = ((mae_pixels - _MEAN.to(device)) / _STD.to(device), mae_pixels, cfg.mae_mask_ratio,
                              mae_gen)
            if distil:
                crops = [c.to(device, non_blocking=True) for c in crops]
                crops = [(c - _MEAN.to(device)) / _STD.to(device) for c in crops]
                # the teacher's global views: the student's own, or the same crops recoloured (teacher_recolour)
                teacher_crops = crops[-n_global:] if cfg.teacher_recolour else crops[:n_global]
                if cfg.teacher_recolour:
                    crops = crops[:-n_global]
                masks = None
                if patch_weight:
                    mask_gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, step, rank, 19))
                    masks = [random_patch_masks(c.shape[0], grid, tuple(cfg.mask_ratio), cfg.mask_prob, mask_gen,
                                                device) for c in crops[:n_global]]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    with torch.no_grad():
                        teacher_out = teacher(teacher_crops, patch_views=patch_views,
                                              patch_embeddings=bool(nce_weight))
                    student_out = student_ddp(crops, masks, patch_views=patch_views,
                                              patch_embeddings=bool(nce_weight), mae_inputs=mae_inputs)
                    if mae_weight:
                        student_out, mae_loss = student_out
                    if patch_views:
                        (teacher_out, teacher_patch), (student_out, student_patch) = teacher_out, student_out
                    if nce_weight:                       # the forward gave embeddings; the distillation needs logits
                        teacher_z, student_z = teacher_patch, student_patch
                        if distil_patches:
                            with torch.no_grad():
                                teacher_patch = teacher.head.prototype_logits(teacher_z)
                            student_patch = student.head.prototype_logits(student_z)
                temp, rule, distributed = float(temp_sched[epoch]), cfg.teacher_targets, world > 1
                teacher_cls_p = teacher_probs(teacher_out, rule, center, temp, distributed)
                loss = dino_weight * dino_loss(student_out, teacher_cls_p, n_global, cfg.student_temp)
                if distil_patches:
                    teacher_patch_p = teacher_probs(teacher_patch, rule, center_patch, temp, distributed)
                if patch_weight:
                    patch_loss = masked_patch_loss(student_patch, teacher_patch_p, torch.cat(masks),
                                                   cfg.student_temp)
                    loss = loss + patch_weight * patch_loss
                if needs_thetas:
                    positions, inside = zip(*[corresponding_positions(thetas[a], thetas[b], grid)
                                              for a in range(n_global) for b in range(n_global)])
                    pair_shape = (n_global, n_global, *inside[0].shape)
                    positions = torch.stack(positions).view(*pair_shape, 2)
                    inside = torch.stack(inside).view(pair_shape)
                if nce_weight:
                    query_gen = torch.Generator(device=device).manual_seed(seed_of(cfg.seed, step, rank, 23))
                    nce_loss = dense_info_nce_loss(student_z, teacher_z, positions, inside, cfg.contrastive_temp,
                                                   cfg.contrastive_max_queries, query_gen)
                    loss = loss + nce_weight * nce_loss
                if cross_weight:
                    cross_loss = cross_view_patch_loss(student_patch, teacher_patch_p, positions, inside,
                                                       cfg.student_temp)
                    loss = loss + cross_weight * cross_loss
            else:                                    # MAE alone: one forward of the student
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    mae_loss = student_ddp([], mae_inputs=mae_inputs)
                loss = 0.0
            if mae_weight:
                loss = loss + mae_weight * mae_loss
            if not math.isfinite(loss.item()):
                raise NbsegError(f"The loss is {loss.item()} at step {step}: lower blr or raise clip_grad; the "
                                 f"last good checkpoint is {ckpt_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                clip_gradients_(student, cfg.clip_grad)
            if epoch < cfg.freeze_last_layer:
                for p in student.head.last_layer_parameters():
                    p.grad = None
            optimizer.step()
            ema_update_(teacher, student, float(mom_sched[step]))
            if distil:
                batch_mean = teacher_out.float().mean(dim=0, keepdim=True)
                if world > 1:
                    dist.all_reduce(batch_mean)
                    batch_mean /= world
                center = updated_center(center, teacher_out, cfg.center_momentum, batch_mean)
                if distil_patches:
                    patch_mean = teacher_patch.float().flatten(0, 1).mean(dim=0, keepdim=True)
                    if world > 1:
                        dist.all_reduce(patch_mean)
                        patch_mean /= world
                    center_patch = updated_center(center_patch, teacher_patch, cfg.center_momentum, patch_mean)
            step += 1
            loss_value = loss.item()
            seconds = elapsed_before + time.perf_counter() - t_start
            bar.update()
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr_sched[step - 1]:.2e}",
                            mom=f"{mom_sched[step - 1]:.4f}", epoch=epoch)
            if step % cfg.log_every == 0 or step == stop_step:
                rows.append({"step": step, "epoch": epoch, "loss": f"{loss_value:.6f}",
                             "patch_loss": f"{patch_loss.item():.6f}" if patch_weight else "",
                             "cross_view_loss": f"{cross_loss.item():.6f}" if cross_weight else "",
                             "contrastive_loss": f"{nce_loss.item():.6f}" if nce_weight else "",
                             "mae_loss": f"{mae_loss.item():.6f}" if mae_weight else "",
                             "lr": f"{lr_sched[step - 1]:.6g}", "weight_decay": f"{wd_sched[step - 1]:.6g}",
                             "momentum": f"{mom_sched[step - 1]:.6g}", "teacher_temp": f"{temp_sched[epoch]:.4g}",
                             "seconds": f"{seconds:.1f}"})
            if step % cfg.checkpoint_every == 0 or step == stop_step:
                save_checkpoint(step, seconds)
    bar.close()
    seconds = elapsed_before + time.perf_counter() - t_start
    if is_main:
        save_checkpoint(step, seconds)
        if rows:
            from nbseg.io import save_figure

            fig = loss_curve_figure(rows, f"DINO pretraining of {cfg.arch} on {cfg.data}/{cfg.split} (seed {cfg.seed})")
            save_figure(fig, run_dir / "loss_curve.png")
    if world > 1:
        dist.barrier()
    summary = {"steps": step, "total_steps": total_steps, "loss": loss_value, "seconds": seconds,
               "run_dir": str(run_dir), "finished": step >= total_steps}
    if device.type == "cuda":
        summary["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        summary["device_name"] = torch.cuda.get_device_name(device)
    return summary


_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def saved_config_defaults() -> dict:
    """What a stored config means by a key it lacks (the default then), with keys renamed since mapped: ``root`` is
    ``data_root``, the name ``nbseg train`` uses too."""
    return to_dict(PretrainConfig())


def stored_config(config: dict) -> dict:
    """A run's stored config in today's names (runs written before the rename store ``root``)."""
    config = dict(config)
    if "root" in config and "data_root" not in config:
        config["data_root"] = config.pop("root")
    return config


def export_teacher(run_dir: str | Path, out_file: str | Path, fp16: bool = False, *, overwrite: bool = False) -> Path:
    """Write the teacher's backbone as a weights file that ``nbseg.backbones.load(ARCH, weights=OUT_FILE)`` takes.

    The file holds ``{"arch", "state_dict", "meta"}``; meta records the run's config, step and provenance. An
    existing ``out_file`` is kept unless ``overwrite``; a run folder of another command is refused by name.
    """
    from nbseg.io import check_outputs
    from nbseg.train.run_folder import PRETRAIN, read_run_state, require_kind

    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    check_outputs([out_file], inputs=[ckpt_path], overwrite=overwrite, what="weights file")
    state = read_run_state(run_dir)
    if state is None:
        raise NbsegError(f"{run_dir} has no {CHECKPOINT}: is it a `nbseg pretrain` run folder?")
    require_kind(run_dir, state, PRETRAIN, "`nbseg pretrain export` takes the folder of a `nbseg pretrain` run (a "
                                           "method's run already names its backbone weights in its config.yaml)")
    backbone = {k[len("backbone."):]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    if fp16:
        backbone = {k: v.half() if v.is_floating_point() else v for k, v in backbone.items()}
    meta = {"arch": state["arch"], "step": state["step"], "seconds": state.get("seconds"),
            "config": state["config"], "source": "nbseg pretrain (teacher: the student's moving average)"}
    prov = run_dir / "provenance.json"
    if prov.exists():
        meta["provenance"] = json.loads(prov.read_text())
    buf = io.BytesIO()
    torch.save({"arch": state["arch"], "state_dict": backbone, "meta": meta}, buf)
    return atomic_write_bytes(out_file, buf.getvalue())
