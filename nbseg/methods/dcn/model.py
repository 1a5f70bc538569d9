"""DCN (Li et al. 2022, "Dynamic Clustering Network for Unsupervised Semantic Segmentation", arXiv 2210.05944 v1; the
CVPR 2023 version is ACSeg): learnable prototypes turned into per-image cluster centres by attention over a frozen
ViT's pixel embeddings, trained with a modularity loss, so each image gets its own number of regions.

No official code exists (docs/official_implementations.md Sec. 7); everything here follows the paper's text, and the
unofficial reimplementation was not used.

Pieces:

* :class:`DCNDecoder` - K learnable prototypes C^0 (K, D) and ``n_stages`` stages; a stage is a dynamic-update block
  (cross-attention of the prototypes to the pixel embeddings X, Eq. 1-2) and a self-update block (attention among
  the prototypes, Eq. 3-4), each followed by an FFN, every sub-layer residual and followed by LayerNorm.
* :func:`soft_assignment` (Eq. 5, cosine of pixels and centres) and :func:`hard_assignment` (Eq. 6, argmax after
  bilinear upsampling of the soft assignment to the image size).
* The modularity loss (Eq. 7-10) is pure functions in :mod:`nbseg.methods.dcn.losses`.
* :class:`DCN` - the method on the shared loop (:func:`nbseg.train.fit`): ``training_step`` on cached features (or on
  images), ``predict`` from images or from cached features, ``provenance``.
* Region classification, foreground detection and the paper's Tables 1-2 are in :mod:`nbseg.methods.dcn.regions`; cached
  features in :mod:`nbseg.features.cache`.
* The workflows notebook ``11_dcn`` and ``benchmarks/dcn_world.py`` share (train / resume / reload, evaluate, the
  tables beside the paper's numbers) are in :mod:`nbseg.methods.dcn.evaluation`; the figures and the region explorer in
  :mod:`nbseg.methods.dcn.figures`.

Choices the paper leaves open, and what we chose (each is a config key where that makes sense):

1. **Modularity normalisation.** Eq. (7)/(10) are used as printed: ``2m = sum_ij A_ij`` over all ordered pairs (i, j),
   the sum running over every pair *including i = j* (``A_ii = 1``); the outer factor is ``1/(2m)``. (The unofficial
   code divides by m instead, which only doubles the loss.) The loss of a batch is the mean over its images.
2. **delta.** Eq. (9) as printed: ``delta_ij = max_c max(0, S_ic) * max(0, S_jc)``; the affinity A, degrees and m come
   from the frozen embeddings, so the gradient flows only through delta (the centres).
3. **Prototype initialisation.** "Randomly initialized": C^0 ~ N(0, 1) (``prototype_init: normal``), seeded by the
   config seed; attention / FFN weights keep PyTorch's default initialisation.
4. **Stages.** One stage = one dynamic-update block + one self-update block (the paper applies them "alternately"
   and sets "the number of prototype updating stages" to 6): ``n_stages: 6`` gives 6 cross- and 6 self-attentions.
5. **Sub-layer order and normalisation.** Post-norm, as "followed by layer normalization" reads:
   ``C = LN(C + DynUpdate(C, X)); C = LN(C + FFN(C)); C = LN(C + SelfUpdate(C)); C = LN(C + FFN'(C))``. Every stage
   and block has its own weights.
6. **Attention heads.** Eq. (1)-(4) are single-head scaled dot-product attention with ``1/sqrt(d)``: ``n_heads: 1``,
   projections W_q, W_k, W_v, W_o without biases (the equations have none), PyTorch's default ``nn.Linear`` init.
   :class:`PrototypeAttention` evaluates the same product re-associated (the n pixel embeddings are never
   projected), which makes a decoder step much cheaper than a backbone pass.
7. **FFN.** "Following the transformer": D -> 4D -> D with ReLU, dropout 0.
8. **Pixel embeddings.** The last block's patch tokens after the final LayerNorm, CLS dropped (Sec. 4.1.2), used raw
   (not normalised) as keys and values; the cosine of Eq. (5) normalises both sides.
9. **Input size.** Images are resized to ``input_size`` (224 in the paper; 96, the world's native size, here) before
   the backbone; at inference the soft assignment is upsampled bilinearly to the *original* image size before the
   argmax (Eq. 6). No augmentation, as in the paper.
10. **Schedule.** AdamW, lr 1e-4, weight decay 0.01, batch 32, 2500 iterations (paper). The shared loop's cosine
    decay is switched off by ``min_lr = lr`` (the paper names no schedule). Biases and LayerNorm weights get no
    weight decay (the shared loop's rule); the prototypes are decayed like the other matrices.
11. **Regions.** A region is the set of pixels assigned to one cluster, connected or not (Sec. 3.2: "each region is
    identified by a cluster"); the number of regions of an image is the number of distinct clusters in its hard
    assignment at the image size.

The choices of the region-classification stage (crop, mask, foreground detection, k-means, k-NN) are listed in
:mod:`nbseg.methods.dcn.regions`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nbseg.backbones import resize_to_patch_multiple
from nbseg.data import load_dataset
from nbseg.errors import ConfigError
from nbseg.features.cache import build_feature_cache
from nbseg.methods.base import frozen_backbone
from nbseg.methods.dcn.losses import cosine_affinity, hard_comembership, modularity, modularity_loss
from nbseg.methods.dcn.regions import FOREGROUND_RULES
from nbseg.prototype_scores import prototype_cosine_maps, segment_by_argmax
from nbseg.runs import backbone_facts
from nbseg.train import TrainConfig

PROTOTYPE_INITS = ("normal",)


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------

@dataclass
class DCNConfig(TrainConfig):
    """DCN's settings on top of the shared training knobs. Defaults: the world with the embedded backbone
    (``configs/dcn_world.yaml`` comments each value); ``configs/dcn_voc.yaml`` holds the paper's VOC settings."""

    # backbone
    backbone: str = "embedded"
    weights: str | None = None
    random_init: bool = False
    # decoder (Sec. 3.1, 4.1.2)
    n_prototypes: int = 5                # k
    n_stages: int = 6                    # prototype updating stages (dynamic + self update each)
    n_heads: int = 1                     # Eq. (1)-(4): single-head attention
    ffn_dim: int | None = None           # None: 4 * D
    prototype_init: str = "normal"
    # data: features of `data`/`split` resized to input_size, cached under cache_root
    data: str = "world"
    data_root: str | None = None
    split: str = "train"
    labels: str = "voc"                  # world label set (evaluation only)
    input_size: int = 96
    cache_root: str | None = None        # None: artifacts/feature_cache
    cache_limit: int | None = None       # cache / train on the first N images only (smoke runs)
    # region classification (nbseg.methods.dcn.regions)
    region_size: int = 64                # crop size for region embeddings (the backbone's training input size)
    n_fg_classes: int | None = None      # C for k-means on foreground regions; None: the dataset's classes - 1
    foreground: str = "min-head"         # foreground rule (nbseg.methods.dcn.regions.FOREGROUND_RULES); paper: min-head
    # shared knobs with the paper's values (AdamW 1e-4, wd 0.01, batch 32, 2500 iterations, constant lr)
    epochs: int = 41
    max_steps: int | None = 2500
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-4
    weight_decay: float = 0.01

    def validate(self) -> None:
        super().validate()
        checks = [(self.n_prototypes >= 2, f"n_prototypes must be >= 2, got {self.n_prototypes}"),
                  (self.n_stages >= 1, f"n_stages must be >= 1, got {self.n_stages}"),
                  (self.n_heads >= 1, f"n_heads must be >= 1, got {self.n_heads}"),
                  (self.prototype_init in PROTOTYPE_INITS,
                   f"prototype_init: {self.prototype_init!r} is not one of {list(PROTOTYPE_INITS)}"),
                  (self.input_size >= 1 and self.region_size >= 1, "input_size and region_size must be >= 1"),
                  (self.foreground in FOREGROUND_RULES,
                   f"foreground: {self.foreground!r} is not one of {list(FOREGROUND_RULES)}")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# ----------------------------------------------------------------------------------------------------------
# Decoder, Eq. (1)-(4)
# ----------------------------------------------------------------------------------------------------------

class PrototypeAttention(nn.Module):
    """Scaled dot-product attention of K prototype queries over n tokens, Eq. (1) with the output map of Eq. (2):
    ``Softmax(C W_q (Y W_k)^T / sqrt(d_h)) (Y W_v) W_o`` per head (d_h = d / heads; one head = Eq. 1 as printed).

    Computed in the order ``((C W_q) W_k^T) Y^T`` and ``(A Y) W_v``, which is the same product re-associated: the
    n tokens are never projected, so a stage costs O(K n d) instead of O(n d^2) (with K = 5 prototypes and
    d = 384 about 40x fewer operations). ``W_*`` are bias-free ``nn.Linear`` maps (PyTorch's default init); the
    result equals ``nn.MultiheadAttention(bias=False)`` with the same weights (tested)."""

    def __init__(self, dim: int, n_heads: int = 1):
        super().__init__()
        if dim % n_heads:
            raise ConfigError(f"token width {dim} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def forward(self, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """c (B, K, d) queries, y (B, n, d) keys and values -> (B, K, d)."""
        B, K, d = c.shape
        h = self.n_heads
        q = self.q(c).view(B, K, h, d // h)
        qk = torch.einsum("bkhe,hed->bhkd", q, self.k.weight.view(h, d // h, d))       # C W_q W_k^T per head
        attn = (torch.einsum("bhkd,bnd->bhkn", qk, y) * (d // h) ** -0.5).softmax(-1)
        values = torch.einsum("bhkn,bnd->bhkd", attn, y)                                 # A Y
        out = torch.einsum("bhkd,hed->bkhe", values, self.v.weight.view(h, d // h, d))   # (A Y) W_v per head
        return self.o(out.reshape(B, K, d))


class UpdateBlock(nn.Module):
    """``C <- LN(C + Softmax(C W_q (Y W_k)^T / sqrt(d)) (Y W_v) W_o)`` then ``C <- LN(C + FFN(C))``.

    With Y = X (pixel embeddings) it is the dynamic-update block, Eq. (1)-(2); with Y = C the self-update block,
    Eq. (3)-(4). ``n_heads`` > 1 splits d into heads with ``1/sqrt(d / heads)`` (Eq. 1 is the single-head case)."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int):
        super().__init__()
        self.attn = PrototypeAttention(dim, n_heads)
        self.norm_attn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, c: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """c (B, K, D) prototypes, y (B, n, D) keys / values (None: self-update on c) -> (B, K, D)."""
        c = self.norm_attn(c + self.attn(c, c if y is None else y))
        return self.norm_ffn(c + self.ffn(c))


class DCNDecoder(nn.Module):
    """K prototypes and ``n_stages`` stages of [dynamic update (Eq. 1-2), self update (Eq. 3-4)].

    Args:
        dim: D, the backbone's token width.
        n_prototypes: k (5 in the paper).
        n_stages: stages (6 in the paper).
        n_heads: attention heads (1: Eq. 1 as printed).
        ffn_dim: FFN hidden width (None: 4 * D).
    """

    def __init__(self, dim: int, n_prototypes: int = 5, n_stages: int = 6, n_heads: int = 1,
                 ffn_dim: int | None = None):
        super().__init__()
        ffn_dim = ffn_dim or 4 * dim
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, dim))          # C^0 ~ N(0, 1)
        self.dynamic = nn.ModuleList(UpdateBlock(dim, n_heads, ffn_dim) for _ in range(n_stages))
        self.self_update = nn.ModuleList(UpdateBlock(dim, n_heads, ffn_dim) for _ in range(n_stages))

    @property
    def n_prototypes(self) -> int:
        return self.prototypes.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, D) pixel embeddings of one image per batch entry -> cluster centres C (B, K, D)."""
        c = self.prototypes.unsqueeze(0).expand(x.shape[0], -1, -1)
        for dynamic, self_update in zip(self.dynamic, self.self_update):
            c = self_update(dynamic(c, x))
        return c


def soft_assignment(patches: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Eq. (5) on a token grid: ``S = cos(x_i, c_j)``; patches (B, h, w, D), centres (B, K, D) -> (B, K, h, w).
    (The shared :func:`nbseg.prototype_scores.prototype_cosine_maps`, AlignSeg's Eq. 2 too.)"""
    return prototype_cosine_maps(patches, centres)


def hard_assignment(soft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eq. (6) after bilinear upsampling: soft (B, K, h, w) -> (B, H, W) int64 cluster ids in [0, K)."""
    return segment_by_argmax(soft, size)


def count_regions(labels: torch.Tensor) -> torch.Tensor:
    """Distinct clusters per image: labels (B, ...) int -> (B,) int64 (the dynamic number of regions)."""
    flat = labels.reshape(labels.shape[0], -1)
    k = int(flat.max().item()) + 1 if flat.numel() else 1
    present = torch.zeros(flat.shape[0], k, dtype=torch.bool, device=flat.device)
    present.scatter_(1, flat, True)
    return present.sum(1)


# ----------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------

class DCN(nn.Module):
    """DCN = a frozen ViT (``backbone``, from ``cfg`` unless one is passed in) + the trainable ``decoder`` (Sec. 3),
    both on ``device``."""

    frozen_prefixes = ("backbone.",)

    def __init__(self, cfg: DCNConfig, backbone=None, device: str | torch.device = "cpu"):
        super().__init__()
        cfg.validate()
        self.cfg, self.backbone = cfg, frozen_backbone(cfg, backbone, device)
        if cfg.input_size % self.backbone.patch_size:
            raise ConfigError(f"input_size {cfg.input_size} is not a multiple of the backbone's patch size "
                              f"{self.backbone.patch_size}")
        with torch.random.fork_rng(devices=[]):              # initialised on the CPU: same weights on any device
            torch.manual_seed(cfg.seed)
            decoder = DCNDecoder(self.backbone.dim, cfg.n_prototypes, cfg.n_stages, cfg.n_heads, cfg.ffn_dim)
        self.decoder = decoder.to(device)

    @property
    def device(self) -> torch.device:
        return self.decoder.prototypes.device

    # ---- features -----------------------------------------------------------------------------------------
    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        return resize_to_patch_multiple(images, self.backbone.patch_size, self.cfg.input_size)

    def image_features(self, images: torch.Tensor):
        """Backbone features of images (B, 3, H, W) in [0, 1] resized to ``input_size``: :class:`Features`."""
        with torch.no_grad():
            feats = self.backbone.extract(self._resize(images.to(self.device, torch.float32)))
        return type(feats)(feats.patches.clone(), feats.cls.clone(), feats.attn.clone())   # leave inference mode

    def _patches(self, batch: dict) -> torch.Tensor:
        if "patches" in batch:
            return batch["patches"].to(self.device, torch.float32)
        if "image" in batch:
            return self.image_features(batch["image"]).patches
        raise KeyError(f"a DCN batch needs 'patches' (cached features) or 'image', got keys {sorted(batch)}")

    # ---- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """One DCN step.

        Args:
            batch: ``{"patches": (B, h, w, D)}`` cached features (:class:`nbseg.features.cache.CachedFeatureDataset`)
                or ``{"image": (B, 3, H, W)}`` in [0, 1] (the backbone then runs on them).
            step: the global step (unused; part of the method protocol).
        Returns:
            ``loss`` (Eq. 10, mean over the batch) and, detached, ``modularity_hard`` (Eq. 7 of the argmax partition
            on the token grid) and ``regions`` (mean number of distinct clusters per image on the token grid).
        """
        patches = self._patches(batch)
        B, h, w, D = patches.shape
        x = patches.reshape(B, h * w, D)
        soft = soft_assignment(patches, self.decoder(x))                    # (B, K, h, w)
        s = soft.flatten(2).transpose(1, 2)                                 # (B, n, K)
        with torch.no_grad():
            affinity = cosine_affinity(x)                                   # Eq. (8), once for both terms
        loss = modularity_loss(None, s, affinity)
        with torch.no_grad():
            labels = s.argmax(-1)
            q_hard = modularity(affinity, hard_comembership(labels)).mean()
            regions = count_regions(labels).float().mean()
        return {"loss": loss, "modularity_hard": q_hard, "regions": regions}

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(5): patches (B, h, w, D) -> soft assignment (B, K, h, w)."""
        patches = patches.to(self.device, torch.float32)
        return soft_assignment(patches, self.decoder(patches.flatten(1, 2)))

    @torch.inference_mode()
    def predict_features(self, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Regions from (cached) features: patches (B, h, w, D) -> cluster ids (B, H, W) int64 at ``size``."""
        return hard_assignment(self.scores_from_features(patches), tuple(size))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Regions end to end: images (B, 3, H, W) in [0, 1] -> cluster ids (B, H, W) int64 in [0, K), at the
        images' own size (the soft assignment is computed at ``input_size`` and upsampled bilinearly)."""
        return self.predict_features(self.image_features(images).patches, tuple(images.shape[-2:]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)

    # ---- what produced a result ---------------------------------------------------------------------------
    def provenance(self) -> dict:
        """Method and backbone facts (:func:`nbseg.runs.backbone_facts`); the training loop checks them on resume."""
        return {"method": "dcn", **backbone_facts(self.backbone)}


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------

def open_split(cfg: DCNConfig, split: str | None = None):
    """The dataset ``cfg.data`` / ``split`` (default ``cfg.split``), with the world's label set ``cfg.labels``."""
    extra = {"labels": cfg.labels} if cfg.data == "world" else {}
    return load_dataset(cfg.data, cfg.data_root, split or cfg.split, **extra)


def feature_cache(cfg: DCNConfig, backbone, split: str | None = None, *, progress: bool = True, limit=None):
    """The feature cache of ``backbone`` over ``cfg``'s data / ``split`` at ``cfg.input_size`` (built when absent)."""
    return build_feature_cache(backbone, open_split(cfg, split), cfg.input_size, root=cfg.cache_root,
                               limit=cfg.cache_limit if limit is None else limit, progress=progress)


def training_dataset(cfg: DCNConfig, backbone, *, progress: bool = True):
    """The training set of ``cfg``: cached patch tokens, ``dataset[(index, seed)] -> {"index", "patches"}``
    (the default collate stacks them)."""
    return feature_cache(cfg, backbone, progress=progress).dataset(("patches",))


__all__ = ["DCN", "DCNConfig", "DCNDecoder", "UpdateBlock", "PrototypeAttention", "soft_assignment", "hard_assignment",
           "count_regions",
           "open_split", "feature_cache", "training_dataset"]
