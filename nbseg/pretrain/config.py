"""The config of ``nbseg pretrain``: DINO's knobs (defaults from the paper / its released ViT-S recipe unless marked
(world)) and, off by default, the optional objectives of :mod:`nbseg.pretrain.objectives` beside it.

Which knobs are papers' and which are nbseg's own is written beside each one. One flat dataclass, because run folders
store it as one YAML mapping and resume checks it key by key.
"""
from __future__ import annotations

from dataclasses import dataclass

from nbseg.config import to_dict
from nbseg.errors import ConfigError

__all__ = ["PretrainConfig", "uses_objectives", "distils", "saved_config_defaults", "stored_config"]


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


def uses_objectives(cfg: PretrainConfig) -> bool:
    """True when the config asks for anything beyond DINO as published (a patch-level loss, MAE, recoloured teacher
    views or Sinkhorn-Knopp targets): the step then runs :mod:`nbseg.pretrain.objectives` instead of
    :func:`nbseg.pretrain.step.dino_step_losses`. (Colour tables are an augmentation: they change the views only.)"""
    return bool(cfg.patch_loss_weight or cfg.cross_view_loss_weight or cfg.dense_contrastive_weight
                or cfg.mae_loss_weight or cfg.teacher_recolour or cfg.teacher_targets != "center")


def distils(cfg: PretrainConfig) -> bool:
    """True when some loss needs DINO's views and the teacher's forward (False: MAE alone, which needs neither)."""
    return bool(cfg.dino_loss_weight or cfg.patch_loss_weight or cfg.cross_view_loss_weight
                or cfg.dense_contrastive_weight)


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

