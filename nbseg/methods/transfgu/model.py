"""TransFGU (Yin et al., ECCV 2022, "A Top-down Approach to Fine-Grained Unsupervised Semantic Segmentation"): concepts
from CLS tokens of sliding-window crops, Grad-CAM pseudo labels, and a Segmenter decoder bootstrapped by
teacher-student rounds on a frozen ViT.

Pieces: :class:`TransFGUConfig`; :class:`SegmenterDecoder` (Eq. 2); :class:`TransFGU` (the model on the shared
loop: ``training_step`` on augmented crops with their pseudo labels, ``epoch_end`` = the teacher refresh of
Sec. 3.3, ``predict``). The stages before training are in :mod:`~nbseg.methods.transfgu.bank`, the Grad-CAM in
:mod:`~nbseg.methods.transfgu.gradcam`, the losses in :mod:`~nbseg.methods.transfgu.losses`, the training data
and its augmentation in :mod:`~nbseg.methods.transfgu.data`.

``variant: paper | official`` (docs/official_implementations.md Sec. 5; every result is labelled with it):

============================  ===================================  =========================================
what                          paper                                official (released code)
============================  ===================================  =========================================
Grad-CAM loss (Eq. 5)         ``1 - x.S / sqrt(d)``                ``1 - cos(x, S)``
map (Eq. 7)                   ``A + relu(-g)``                     ``A/max A + relu(-g) in top-80 % mass``,
                                                                   0 where ``g > 0``
masks (Eq. 2)                 ``x' C^T / sqrt(d)``                 cosine, then LayerNorm over the K channels
diversity (Eq. 15)            ``1 + mean_ij C_i.C_j / sqrt(d)``    mean over i<j of ``1 + cos(e_i, e_j)``
peer alpha                    linear 0.03 -> 0.10 over a round     ``0.03 + 0.01 e``, capped at 0.10
teacher refresh               student and optimiser state reset    student reset, optimiser state kept
updates                       every step                           non-positive losses skipped, gradients
                                                                   clamped elementwise to [-1, 1]
============================  ===================================  =========================================

Choices neither source fixes (ours, stated): the paper's Eq. 7 "Grad-CAM" is read as ``relu(-g)`` (the part of the
gradient that lowers the loss); the peer loss starts with the first teacher (released; plain CE in round 0) in both
variants; AdamW's decoupled weight decay stands in for Adam's L2 decay (the shared loop's optimiser).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nbseg.backbones import resize_to_patch_multiple
from nbseg.errors import ConfigError
from nbseg.methods.base import frozen_backbone
from nbseg.methods.transfgu import losses as L
from nbseg.methods.transfgu.bank import PSEUDO_MAPS
from nbseg.methods.transfgu.gradcam import GRADIENT_METHODS, VARIANTS
from nbseg.prototype_scores import segment_by_argmax
from nbseg.runs import backbone_facts
from nbseg.train import TrainConfig

# Thing / stuff counts of the label sets nbseg knows: (things, stuff, foreground only with a background channel).
CLASS_SPLITS = {("world", "full"): (8, 5, False), ("world", "coarse"): (1, 2, False), ("world", "voc"): (8, 0, True),
                ("voc", None): (20, 0, True), ("cocostuff27", None): (12, 15, False),
                ("cityscapes27", None): (0, 27, False)}


@dataclass
class TransFGUConfig(TrainConfig):
    """TransFGU's settings on top of the shared training knobs. Defaults: the world with the embedded backbone
    (``configs/transfgu_world.yaml`` comments each value); ``transfgu_voc.yaml`` / ``transfgu_cocostuff27.yaml``
    hold the released settings."""

    variant: str = "official"
    # backbone
    backbone: str = "embedded"
    weights: str | None = None
    random_init: bool = False
    # data
    data: str = "world"
    data_root: str | None = None
    split: str = "train"
    eval_split: str = "val"
    labels: str = "full"                 # world label set (the counts below follow it)
    image_size: int = 96                 # pseudo labels and evaluation (released: 320)
    train_limit: int | None = None       # first N training images (bank, pseudo labels, training)
    cache_root: str | None = None
    chunk_size: int = 32
    # crop bank and concepts (Sec. 3.2, 4.2)
    crop_scales: list[float] = field(default_factory=lambda: [0.5, 0.4, 0.3, 0.2])
    bank_upscale: int = 2
    crop_size: int = 48                  # crops resized to this (released: H/2 of the 2x image = 320)
    bank_limit: int | None = None        # crop bank from the first N training images (None: train_limit)
    fg_threshold: float = 0.5
    bg_threshold: float = 0.8
    n_things: int | None = None          # None: from the dataset (CLASS_SPLITS)
    n_stuff: int | None = None
    foreground_only: bool | None = None  # None: from the dataset (VOC-style labels with a background class)
    kmeans_iters: int = 100
    kmeans_seed: int = 1
    # Grad-CAM (Eq. 5-7)
    gradcam_mass: float = 0.8
    gradient: str = "jacobian"           # jacobian | backward (same maps)
    # nbseg's design change (issue #16, not the paper's): "cosine" = patch-token cosine to the concepts, each group
    # on its side of the crop bank's foreground split (bank.split_cosine_maps) instead of Grad-CAM
    pseudo_maps: str = "gradcam"
    # decoder (Eq. 2)
    decoder_dim: int | None = None       # None: the backbone's width
    decoder_layers: int = 2
    decoder_heads: int = 6
    dropout: float = 0.1
    # losses (Eq. 8-16)
    background_threshold: float = 0.1
    uncertainty_weight: float = 0.3
    diversity_weight: float = 1.0
    # augmentation (Sec. 4.2)
    crop_scale_min: float = 0.4
    crop_scale_max: float = 0.9
    train_crop_size: int | None = None   # None: image_size / 2
    # false: nbseg's sanity fit (issue #16, not the paper's): each item is the whole image at train_crop_size with
    # its stored maps, no flip, no photometric draw, so the student is fitted on exactly what it is scored on
    augment: bool = True
    # bootstrapping (Sec. 3.3): the teacher is refreshed at the start of epoch e when e >= bootstrap_start and
    # (e - bootstrap_start) % interval == 0, interval = bootstrap_intervals[min(e // 10, len - 1)] (released lookup)
    bootstrap_start: int = 2
    bootstrap_intervals: list[int] = field(default_factory=lambda: [2])
    # optimisation (released: Adam 1e-4, no schedule)
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-4
    min_lr: float = 1e-4
    weight_decay: float = 5e-4

    def validate(self) -> None:
        super().validate()
        checks = [(self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}"),
                  (self.gradient in GRADIENT_METHODS, f"gradient must be one of {GRADIENT_METHODS}"),
                  (self.pseudo_maps in PSEUDO_MAPS,
                   f"pseudo_maps must be 'gradcam' (paper / released) or 'cosine', got {self.pseudo_maps!r}"),
                  (len(self.crop_scales) > 0 and all(0 < s <= 1 for s in self.crop_scales),
                   f"crop_scales must be fractions in (0, 1], got {self.crop_scales}"),
                  (0 < self.crop_scale_min <= self.crop_scale_max <= 1,
                   f"need 0 < crop_scale_min <= crop_scale_max <= 1 (1: crops of the whole image), got "
                   f"{self.crop_scale_min}, {self.crop_scale_max}"),
                  (isinstance(self.augment, bool), f"augment must be true or false, got {self.augment!r}"),
                  (self.bank_upscale >= 1 and self.bootstrap_start >= 1, "bank_upscale and bootstrap_start >= 1"),
                  (all(int(i) >= 1 for i in self.bootstrap_intervals) and len(self.bootstrap_intervals) > 0,
                   "bootstrap_intervals must be a non-empty list of integers >= 1")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def class_split(self) -> tuple[int, int, bool]:
        """(n_things, n_stuff, foreground_only) from the config, else from the dataset's label set."""
        default = CLASS_SPLITS.get((self.data, self.labels if self.data == "world" else None))
        if default is None and (self.n_things is None or self.n_stuff is None):
            raise ConfigError(f"no thing / stuff counts known for data={self.data!r}: set n_things, n_stuff and "
                              "foreground_only")
        things = self.n_things if self.n_things is not None else default[0]
        stuff = self.n_stuff if self.n_stuff is not None else default[1]
        fg_only = self.foreground_only if self.foreground_only is not None else default[2]
        return int(things), int(stuff), bool(fg_only)

    @property
    def n_classes(self) -> int:
        """K: concepts (+ the background channel when foreground only)."""
        things, stuff, fg_only = self.class_split()
        return things + stuff + int(fg_only)

    @property
    def crop_px(self) -> int:
        return self.train_crop_size or self.image_size // 2

    def refresh_epochs(self) -> list[int]:
        """Epochs at whose start the teacher is refreshed (released schedule, see the field comment)."""
        out, e = [], self.bootstrap_start
        while e < self.epochs:
            out.append(e)
            e += int(self.bootstrap_intervals[min(e // 10, len(self.bootstrap_intervals) - 1)])
        return out


class SegmenterDecoder(nn.Module):
    """Segmenter's mask transformer (Strudel et al.; TransFGU Eq. 2): patch tokens projected to ``dim``, K class
    embeddings (orthogonal init) appended, ``n_layers`` pre-norm transformer blocks (MLP 4 dim, dropout), LayerNorm,
    patch / class outputs multiplied by learned ``dim x dim`` matrices. Masks: paper ``x' C^T / sqrt(dim)``;
    official: cosine, then LayerNorm over the K channels."""

    def __init__(self, in_dim: int, n_classes: int, dim: int, n_layers: int = 2, n_heads: int = 6,
                 dropout: float = 0.1, variant: str = "official"):
        super().__init__()
        self.variant, self.dim = variant, dim
        self.proj_dec = nn.Linear(in_dim, dim)
        self.cls_emb = nn.Parameter(nn.init.orthogonal_(torch.empty(n_classes, dim)))
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(dim, n_heads, 4 * dim, dropout, activation="gelu",
                                                               batch_first=True, norm_first=True)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.proj_patch = nn.Parameter(dim ** -0.5 * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(dim ** -0.5 * torch.randn(dim, dim))
        self.mask_norm = nn.LayerNorm(n_classes)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """patches (B, h, w, D) -> masks (B, K, h, w) (logits) and output class embeddings (B, K, dim)."""
        B, h, w, _ = patches.shape
        x = self.proj_dec(patches.reshape(B, h * w, -1))
        x = torch.cat([x, self.cls_emb.expand(B, -1, -1)], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        p, c = x[:, :h * w] @ self.proj_patch, x[:, h * w:] @ self.proj_classes
        if self.variant == "paper":
            masks = p @ c.transpose(1, 2) / self.dim ** 0.5
        else:
            p, c = F.normalize(p, dim=-1), F.normalize(c, dim=-1)
            masks = self.mask_norm(p @ c.transpose(1, 2))
        return masks.transpose(1, 2).reshape(B, -1, h, w), c


def photometric(images: torch.Tensor) -> torch.Tensor:
    """One photometric draw for the whole batch (released ``data_augment``): ColorJitter(.8, .8, .8, .2) with p 0.3,
    grayscale p 0.2, Gaussian blur 3x3 sigma in [1, 2] p 0.2. Draws from the global torch RNG (re-seeded per step
    by the shared loop). (B, 3, H, W) in [0, 1] -> same."""
    from torchvision import transforms as T

    if torch.rand(()) < 0.3:
        images = T.ColorJitter(0.8, 0.8, 0.8, 0.2)(images)
    if torch.rand(()) < 0.2:
        images = T.functional.rgb_to_grayscale(images, 3)
    if torch.rand(()) < 0.2:
        images = T.GaussianBlur(3, (1.0, 2.0))(images)
    return images.clamp(0, 1)


class TransFGU(nn.Module):
    """A frozen ViT + the student Segmenter decoder (trained) + its teacher (a copy, refreshed by ``epoch_end``)."""

    frozen_prefixes = ("backbone.",)

    def __init__(self, cfg: TransFGUConfig, backbone=None, device: str | torch.device = "cpu"):
        super().__init__()
        cfg.validate()
        self.cfg, self.backbone = cfg, frozen_backbone(cfg, backbone, device)
        for size in (cfg.image_size, cfg.crop_px, cfg.crop_size):
            if size % self.backbone.patch_size:
                raise ConfigError(f"size {size} is not a multiple of the backbone's patch size "
                                  f"{self.backbone.patch_size}: change image_size / train_crop_size / crop_size")
        self.n_things, self.n_stuff, self.foreground_only = cfg.class_split()
        with torch.random.fork_rng(devices=[]):              # initialised on the CPU: same weights on any device
            torch.manual_seed(cfg.seed)
            student = SegmenterDecoder(self.backbone.dim, cfg.n_classes, cfg.decoder_dim or self.backbone.dim,
                                       cfg.decoder_layers, cfg.decoder_heads, cfg.dropout, cfg.variant)
        self.student = student.to(device)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        # The student's initial weights, rebuilt from the seed (not checkpointed): each round restarts from them.
        self._initial = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        self.register_buffer("round", torch.zeros((), dtype=torch.long))
        self.register_buffer("epochs_since_refresh", torch.zeros((), dtype=torch.long))
        self.round_callback = None           # (model, finished_round) -> None, called before each refresh
        if cfg.variant == "official":        # released: gradients clamped elementwise to [-1, 1]
            for p in self.student.parameters():
                p.register_hook(lambda g: g.clamp(-1.0, 1.0))

    @property
    def device(self) -> torch.device:
        return self.student.cls_emb.device

    def parameter_groups(self) -> list[dict]:
        """The student only (the teacher is never optimised); no decay on biases and 1-D parameters."""
        decay = [p for n, p in self.student.named_parameters() if p.ndim > 1 and n != "cls_emb"]
        other = [p for n, p in self.student.named_parameters() if not (p.ndim > 1 and n != "cls_emb")]
        return [{"params": decay}, {"params": other, "weight_decay": 0.0}]

    # ---- features -----------------------------------------------------------------------------------------
    def patches_of(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """Frozen patch tokens of images (B, 3, H, W) in [0, 1] resized to ``size``: (B, h, w, D)."""
        images = resize_to_patch_multiple(images.to(self.device, torch.float32), self.backbone.patch_size, size)
        return self.backbone.extract(images).patches.clone()              # leave inference mode

    def targets(self, pseudo: torch.Tensor) -> torch.Tensor:
        """Cropped Grad-CAM maps (B, K', h, w) -> normalised pseudo labels (B, K, h, w) (Eq. 8 for VOC-style)."""
        p = L.minmax_normalise(pseudo)
        return L.with_background(p, self.cfg.background_threshold) if self.foreground_only else p

    # ---- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """batch ``{"image": (B, 3, s, s) crops in [0, 1], "pseudo": (B, K', g, g) their Grad-CAM maps}`` ->
        ``loss`` (Eq. 16) and its terms."""
        cfg = self.cfg
        images = photometric(batch["image"]) if cfg.augment else batch["image"]
        patches = self.patches_of(images, cfg.crop_px)
        target = self.targets(batch["pseudo"].float())
        bootstrapping = int(self.round) > 0
        teacher_logits = None
        if bootstrapping:
            with torch.no_grad():
                self.teacher.eval()
                teacher_logits = self.teacher(patches)[0]
        target = L.bootstrap_target(target, teacher_logits)
        logits, class_emb = self.student(patches)
        per_round = self.round_length()
        alpha = L.peer_alpha(int(self.epochs_since_refresh), per_round, cfg.variant) if bootstrapping else 0.0
        permutation = torch.randperm(logits.shape[1], device=logits.device)
        peer = L.peer_loss(logits, target, alpha, permutation)
        if self.foreground_only and cfg.variant == "official":
            unc = L.uncertainty_loss(logits, mask=target[:, 1:].amax(1) > cfg.background_threshold,
                                     channels=slice(1, None))
        else:
            unc = L.uncertainty_loss(logits)
        div = (L.diversity_loss_paper if cfg.variant == "paper" else L.diversity_loss_official)(class_emb)
        loss = peer + cfg.uncertainty_weight * unc + cfg.diversity_weight * div
        out = {"loss": loss, "peer": peer.detach(), "uncertainty": unc.detach(), "diversity": div.detach(),
               "alpha": torch.tensor(alpha), "round": self.round.float()}
        if cfg.variant == "official":        # released: a non-positive loss is not stepped on
            out["skip_step"] = (loss.detach() <= 0)
        return out

    def round_length(self) -> int:
        """Epochs of the current round (the paper's alpha ramp spans it)."""
        refresh = [0, *self.cfg.refresh_epochs(), self.cfg.epochs]
        r = min(int(self.round), len(refresh) - 2)
        return refresh[r + 1] - refresh[r]

    def epoch_end(self, epoch: int, optimizer=None) -> None:
        """The shared loop's epoch hook: refresh the teacher when epoch ``epoch + 1`` starts a round (Sec. 3.3):
        teacher <- student, student <- its initial weights, alpha's counter restarts (paper: the optimiser state
        too; released: kept)."""
        if epoch + 1 not in self.cfg.refresh_epochs():
            self.epochs_since_refresh += 1
            return
        if self.round_callback is not None:
            self.round_callback(self, int(self.round))
        self.teacher.load_state_dict(self.student.state_dict())
        self.student.load_state_dict(self._initial)
        self.round += 1
        self.epochs_since_refresh.zero_()
        if optimizer is not None and self.cfg.variant == "paper":
            optimizer.state.clear()

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, h, w, D) -> the student's masks (B, K, h, w)."""
        self.student.eval()
        return self.student(patches.to(self.device, torch.float32))[0]

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> (B, H, W) int64 in [0, K): masks at ``image_size`` upsampled bilinearly
        to the images' size, argmax (released evaluation)."""
        scores = self.scores_from_features(self.patches_of(images, self.cfg.image_size))
        return segment_by_argmax(scores, tuple(images.shape[-2:]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)

    def provenance(self) -> dict:
        return {"method": "transfgu", "variant": self.cfg.variant, **backbone_facts(self.backbone)}


__all__ = ["TransFGUConfig", "SegmenterDecoder", "TransFGU", "photometric", "CLASS_SPLITS"]
