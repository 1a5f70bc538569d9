"""AlignSeg (Liu et al., "Rethinking Self-Supervised Semantic Segmentation: Achieving End-to-End Segmentation",
TPAMI 2024): a frozen ViT, a small Transformer decoder with K learnable prototypes, trained by prototype-image and
global-local alignment.

Pieces (Sec. IV of the paper; the released code as described in docs/official_implementations.md Sec. 3):

* :class:`AlignSegDecoder` - K learnable prototypes P (K, D) and L layers of [cross-attention prototypes -> patch
  tokens, self-attention among prototypes, FFN], each with a residual and a post-LayerNorm (Mask2Former-style, no
  positional embeddings, dropout 0, FFN D -> ffn_dim -> D with ReLU; Linear weights trunc-normal(0.02), prototypes
  N(0, 1) as the released ``nn.Embedding``). ``decoder(tokens)`` gives the image-adapted prototypes P^x (Eq. 1).
* Eq. (2) and (3) (cosine to the prototypes, argmax after bilinear upsampling) are the shared
  :func:`nbseg.prototype_scores.prototype_cosine_maps` and :func:`~nbseg.prototype_scores.segment_by_argmax`.
* :class:`AlignSeg` - the method: frozen ``backbone``, ``decoder``, ``training_step``, ``predict``, ``provenance``.
* The losses are pure functions in :mod:`nbseg.methods.alignseg.losses`; the crops in :mod:`nbseg.data.multicrop`.

Where the paper and the released code differ, ``AlignSegConfig.variant`` picks (every result must say which):

* L_proto: ``paper`` = Eq. (4), one-directional InfoNCE over the K local prototypes, summed over i;
  ``official`` = NT-Xent over the 2K normalised prototypes, tau = 1.
* L_corr: ``paper`` = Eq. (10) with Eq. (8)'s clamped-cosine product against the raw cosine DenseCorr, averaged over
  the fg pairs; ``official`` = temperature-1 softmax over the clamped cosines, spatially centred target,
  ``0.15 * sum`` over the batch and the fg pairs.
* Total: ``paper`` = alpha L_proto + beta L_corr (Eq. 11, alpha and beta from the config); ``official`` = the sum
  (set alpha = beta = 1, as the shipped configs do). The paper never states beta. With alpha = beta = 1 the two
  terms are far apart in gradient at initialisation, because Eq. (4) sums over the K prototypes while our Eq. (10)
  is a mean. ``benchmarks/alignseg_grad_balance.py`` (embedded backbone, caption tags, not DINO; 32 world train
  images; mean of seeds 0-2) measured the decoder-gradient norms: ``paper`` L_proto 4.14 against L_corr 0.074 (56 x),
  so L_corr hardly trains; ``official`` 0.47 against 0.97. ``nbseg ablate alignseg`` sweeps beta.
* Decoder layers: ``paper`` chains the layers (layer l+1 refines layer l's prototypes); ``official`` reproduces the
  released loop, in which every layer restarts from the raw learned prototypes, so only the last layer counts. This
  only matters for L > 1 (the default is L = 1).

The same in both variants: each crop is decoded separately with the same prototypes (the paper's Eq. 1 per crop,
the released code's per-chunk decoding - here crops are batch entries, which is the same computation); the mask is
fg(global token) AND fg(local token) (Eq. 9), computed on the global and on every local crop; no geometric-overlap
mask; h per dataset (0.11 VOC, 0.10 COCO in the released configs). The saliency rule is ``AlignSegConfig.saliency``
(recorded in every evaluation): ``"alignseg-released"`` (default, what the release runs: head mean -> Gaussian blur
-> keep 60% of the mass -> drop components of <= 2 patches, :func:`nbseg.saliency.alignseg_saliency`) or ``"dino"``
(the paper's words, "exactly as DINO": keep 60% of the head-mean mass, :func:`nbseg.saliency.dino_saliency`).

Our choices, stated:

* The paper prints no reduction for Eq. (10); ``paper`` averages over the fg pairs of each local crop (scale
  independent of batch size and saliency), then over the crops. A batch element with no fg pair adds nothing.
* Eq. (4) is averaged over the batch (not printed). tau for ``paper`` comes from the config (default 1, the
  released value; the paper's own value is in an appendix we do not have).
* h on the world (``configs/alignseg_world.yaml``) is set from the embedded backbone's token cosines, like
  STEGO's per-dataset shifts; see the YAML's comment.
* :meth:`AlignSeg.predict` resizes images whose sides are not multiples of the patch size down to the nearest
  multiple (the labels are upsampled back to the input size).
* Training runs through :func:`nbseg.train.fit` with :class:`nbseg.data.multicrop.MultiCropDataset` and
  :func:`~nbseg.data.multicrop.collate_multicrop`, with the released optimiser: AdamW over
  :meth:`AlignSeg.parameter_groups` (weight decay on the decoder's matrices only, none on the prototypes) and
  ``lr_schedule="step"`` (StepLR, x0.5 every 3 epochs) by default and in the shipped configs; ``lr_schedule=cosine``
  is the shared loop's alternative. The world config raises lr to 2e-3 (see its comment). The official L_corr is a
  sum over the batch, so under DDP each process's loss covers its local batch only (the gradient is then 1/world of
  the single-process one for that term).
* :class:`~nbseg.methods.alignseg.crop_cache.CropFeatureCache` (optional, in memory) keeps the frozen backbone's
  tokens and saliency masks of training crops, so runs that see the same crops run the backbone once (speed only).
* Evaluation in :mod:`~nbseg.methods.alignseg.evaluation`, tables and figures in :mod:`~nbseg.methods.alignseg.figures`,
  Table II in :mod:`~nbseg.methods.alignseg.ablations`; training, reloading, the commands and user images are the
  generic :mod:`nbseg.methods.workflow`, :mod:`~nbseg.methods.cli` and :mod:`~nbseg.methods.segment`.
* When the global and local crops have the same size, all crops go through the backbone and the decoder in one
  batch (each crop is still its own batch entry, so nothing mixes between crops).

Length: just over 400 lines, a sixth of them the docstring above, which records where paper and released
code differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nbseg.backbones import resize_to_patch_multiple
from nbseg.data import ResizeSquare, load_dataset
from nbseg.data.multicrop import MultiCropDataset, MultiCropSpec
from nbseg.errors import ConfigError
from nbseg.methods.alignseg.crop_cache import CropFeatureCache
from nbseg.methods.alignseg.losses import VARIANTS, alignseg_loss_terms, check_variant
from nbseg.methods.base import frozen_backbone
from nbseg.prototype_scores import prototype_cosine_maps, segment_by_argmax
from nbseg.runs import backbone_facts
from nbseg.saliency import alignseg_saliency, dino_saliency
from nbseg.train import TrainConfig

# The saliency mask of Eq. (9): the release's blurred rule, or DINO's keep-the-mass rule the paper names.
# (B, heads, h, w) attention, fraction -> (B, h, w) bool.
SALIENCY_RULES = {"alignseg-released": alignseg_saliency, "dino": dino_saliency}


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------

@dataclass
class AlignSegConfig(TrainConfig):
    """AlignSeg's settings on top of the shared training knobs (:class:`nbseg.train.TrainConfig`). Defaults: the world
    with the embedded backbone (``configs/alignseg_world.yaml`` explains each value); ``configs/alignseg_voc.yaml``
    holds the paper's VOC settings.

    Schedule: as released, AdamW lr 5e-4, weight decay 0.04 on the decoder's matrices (none on biases, norms and the
    prototypes: :meth:`AlignSeg.parameter_groups`), StepLR x0.5 every 3 epochs (``lr_schedule="step"``), batch 32, 10
    epochs. The paper states no schedule; ``lr_schedule="cosine"`` gives the shared loop's per-step cosine decay.
    """

    # backbone
    backbone: str = "embedded"
    weights: str | None = None
    random_init: bool = False
    # which form of the losses (and of the decoder loop) runs: "paper" | "official"
    variant: str = "official"
    # decoder: K prototypes, L layers
    n_prototypes: int = 10               # K
    n_layers: int = 1                    # L
    n_heads: int = 3
    ffn_dim: int | None = None           # None: 2 * D (768 for ViT-S, as released)
    # multi-crop: 1 global + n_local local views (v_l), the minimum-intersection rule
    global_size: int = 64
    global_scale: tuple[float, float] = (0.5, 1.0)
    local_size: int = 64
    local_scale: tuple[float, float] = (0.05, 0.25)
    n_local: int = 2                     # v_l
    min_intersection: float = 0.05
    # attention-map constraint
    use_saliency: bool = True
    saliency: str = "alignseg-released"  # SALIENCY_RULES: "alignseg-released" (as released) | "dino" (paper's words)
    saliency_fraction: float = 0.6
    # losses
    h: float = 0.3                       # world default; 0.11 VOC (released)
    tau_proto: float = 1.0
    corr_factor: float = 0.15            # official only
    corr_temperature: float = 1.0        # official only
    alpha: float = 1.0
    beta: float = 1.0
    # data
    data: str = "world"
    data_root: str | None = None
    split: str = "train"
    max_train_images: int | None = None  # train on the first N images only (smoke runs); None: the whole split
    eval_split: str = "val"
    labels: str = "voc"                  # world only: the label set scored (voc | full | coarse)
    eval_size: int = 96                  # images are resized (square) to this before inference, as released (448)
    # shared knobs with the released values
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.04
    lr_schedule: str = "step"            # released StepLR
    step_epochs: int = 3
    step_gamma: float = 0.5

    def validate(self) -> None:
        super().validate()
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant: {self.variant!r} is not one of {list(VARIANTS)}")
        if self.n_prototypes < 2:
            raise ConfigError(f"n_prototypes must be >= 2, got {self.n_prototypes}")
        if self.n_layers < 1:
            raise ConfigError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.saliency not in SALIENCY_RULES:
            raise ConfigError(f"saliency: {self.saliency!r} is not one of {list(SALIENCY_RULES)}")
        if not 0 < self.saliency_fraction <= 1:
            raise ConfigError(f"saliency_fraction is a fraction of the attention mass in (0, 1], got "
                              f"{self.saliency_fraction}")
        if self.max_train_images is not None and self.max_train_images < self.batch_size:
            raise ConfigError(f"max_train_images={self.max_train_images} is less than one batch of "
                              f"{self.batch_size}: raise it or lower batch_size")
        if self.eval_size < 1:
            raise ConfigError(f"eval_size must be a positive number of pixels, got {self.eval_size}")

    def crop_spec(self) -> MultiCropSpec:
        return MultiCropSpec(global_size=self.global_size, global_scale=tuple(self.global_scale),
                             local_size=self.local_size, local_scale=tuple(self.local_scale), n_local=self.n_local,
                             min_intersection=self.min_intersection)


# ----------------------------------------------------------------------------------------------------------
# Decoder, Eq. (1)-(3)
# ----------------------------------------------------------------------------------------------------------

class AlignSegDecoderLayer(nn.Module):
    """Cross-attention (prototypes attend to the patch tokens) -> self-attention among the prototypes -> FFN, each
    ``q = LayerNorm(q + sublayer(q))`` (post-norm)."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, device=None):
        super().__init__()
        kw = dict(device=device)
        self.cross_attn = nn.MultiheadAttention(dim, n_heads, batch_first=True, **kw)
        self.norm_cross = nn.LayerNorm(dim, **kw)
        self.self_attn = nn.MultiheadAttention(dim, n_heads, batch_first=True, **kw)
        self.norm_self = nn.LayerNorm(dim, **kw)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim, **kw), nn.ReLU(), nn.Linear(ffn_dim, dim, **kw))
        self.norm_ffn = nn.LayerNorm(dim, **kw)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """queries (B, K, D), tokens (B, N, D) -> (B, K, D)."""
        q = self.norm_cross(queries + self.cross_attn(queries, tokens, tokens, need_weights=False)[0])
        q = self.norm_self(q + self.self_attn(q, q, q, need_weights=False)[0])
        return self.norm_ffn(q + self.ffn(q))


class AlignSegDecoder(nn.Module):
    """K learnable prototypes and L decoder layers: ``P^x = Dec(P, x)`` (Eq. 1).

    Args:
        dim: D, the backbone's token width.
        n_prototypes: K.
        n_layers: L.
        n_heads: attention heads (3 as released, for D = 384).
        ffn_dim: FFN hidden width (None: 2 * D).
        restart_from_prototypes: every layer starts from the raw prototypes (the released loop; only the last layer
            then counts). False chains the layers, as the paper describes.
        device: where the parameters live.
    """

    def __init__(self, dim: int, n_prototypes: int = 5, n_layers: int = 1, n_heads: int = 3,
                 ffn_dim: int | None = None, *, restart_from_prototypes: bool = False, device=None):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"token width {dim} is not divisible by n_heads={n_heads}")
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, dim, device=device))     # N(0, 1), as nn.Embedding
        self.layers = nn.ModuleList(AlignSegDecoderLayer(dim, n_heads, ffn_dim or 2 * dim, device=device)
                                    for _ in range(n_layers))
        self.restart_from_prototypes = restart_from_prototypes
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @property
    def n_prototypes(self) -> int:
        return self.prototypes.shape[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Eq. (1). tokens (B, N, D) patch tokens of one crop per batch entry -> P^x (B, K, D)."""
        start = self.prototypes.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        q = start
        for layer in self.layers:
            q = layer(start if self.restart_from_prototypes else q, tokens)
        return q


# ----------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------

class AlignSeg(nn.Module):
    """Frozen ``backbone`` + trainable ``decoder``.

    Args:
        cfg: the method's settings.
        backbone: an already loaded :class:`nbseg.backbones.Backbone` (else loaded from ``cfg``).
        device: where the model lives.
    """

    frozen_prefixes = ("backbone.",)

    def __init__(self, cfg: AlignSegConfig, backbone=None, device: str | torch.device = "cpu"):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = frozen_backbone(cfg, backbone, device)
        p = self.backbone.patch_size
        if cfg.global_size % p or cfg.local_size % p:
            raise ConfigError(f"crop sizes {cfg.global_size} / {cfg.local_size} must be multiples of the backbone's "
                              f"patch size {p}")
        with torch.random.fork_rng(devices=[]):              # initialised on the CPU: same weights on any device
            torch.manual_seed(cfg.seed)
            decoder = AlignSegDecoder(self.backbone.dim, cfg.n_prototypes, cfg.n_layers, cfg.n_heads, cfg.ffn_dim,
                                      restart_from_prototypes=cfg.variant == "official")
        self.decoder = decoder.to(device)
        self.feature_cache: CropFeatureCache | None = None     # set one to share backbone work between runs

    @property
    def device(self) -> torch.device:
        return self.decoder.prototypes.device

    # ---- training ---------------------------------------------------------------------------------------
    def crop_features(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen tokens and saliency of a batch of crops (B, 3, S, S) -> tokens (B, h*w, D) (ordinary tensors, safe
        to feed trainable layers) and masks (B, h*w) bool (all True when ``use_saliency`` is off)."""
        with torch.no_grad():
            feats = self.backbone.extract(crops)
            tokens = feats.patches.flatten(1, 2).clone()        # leave inference mode: autograd may save it
            if self.cfg.use_saliency:
                rule = SALIENCY_RULES[self.cfg.saliency]
                mask = rule(feats.attn, self.cfg.saliency_fraction).flatten(1).clone()
            else:
                mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask

    def crop_tokens(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The backbone part of a training step: frozen tokens and saliency masks of every crop of a batch.

        Args:
            batch: a :func:`~nbseg.data.multicrop.collate_multicrop` batch, ``global`` (B, 3, G, G) and ``local``
                (B, V, 3, L, L) in [0, 1] (and ``key`` (B, 2), used by :attr:`feature_cache` when one is set).
        Returns:
            x_g (B, n, D), m_g (B, n) bool, x_l (B, V, m, D), m_l (B, V, m) bool.
        """
        g = batch["global"].to(self.device, torch.float32)
        l = batch["local"].to(self.device, torch.float32)
        B, V = l.shape[:2]
        cache, keys = self.feature_cache, batch.get("key")
        if cache is not None and keys is not None:
            cache.check(self._cache_signature())
            found = cache.lookup(keys, V)
            if found is not None:
                return tuple(t.to(self.device) for t in found)
        l = l.flatten(0, 1)
        if g.shape[-2:] == l.shape[-2:]:                          # one backbone pass for all crops
            tokens, masks = self.crop_features(torch.cat([g, l]))
            x_g, x_l, m_g, m_l = tokens[:B], tokens[B:], masks[:B], masks[B:]
        else:
            (x_g, m_g), (x_l, m_l) = self.crop_features(g), self.crop_features(l)
        x_l, m_l = x_l.unflatten(0, (B, V)), m_l.unflatten(0, (B, V))
        if cache is not None and keys is not None:
            cache.store(keys, x_g, m_g, x_l, m_l)
        return x_g, m_g, x_l, m_l

    def alignment_losses(self, x_g: torch.Tensor, m_g: torch.Tensor, x_l: torch.Tensor, m_l: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """The decoder part of a training step: decode every crop (Eq. 1) and compute Eq. (4)-(11) for the variant.

        Args:
            x_g (B, n, D), m_g (B, n), x_l (B, V, m, D), m_l (B, V, m): :meth:`crop_tokens`' output.
        Returns:
            ``{"loss", "loss_proto", "loss_corr"}`` (see :func:`~nbseg.methods.alignseg.losses.alignseg_loss_terms`).
        """
        B, V, m, D = x_l.shape
        if x_g.shape[1] == m:                                      # every crop decoded separately (batch entries)
            protos = self.decoder(torch.cat([x_g, x_l.flatten(0, 1)]))
            p_g, p_l = protos[:B], protos[B:]
        else:
            p_g, p_l = self.decoder(x_g), self.decoder(x_l.flatten(0, 1))
        K = p_l.shape[1]
        cfg = self.cfg
        return alignseg_loss_terms(
            cfg.variant, x_g, x_l, p_g, p_l.view(B, V, K, D),
            m_g if cfg.use_saliency else None, m_l if cfg.use_saliency else None,
            h=cfg.h, tau_proto=cfg.tau_proto, corr_factor=cfg.corr_factor, corr_temperature=cfg.corr_temperature,
            alpha=cfg.alpha, beta=cfg.beta)

    def training_step(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """One AlignSeg step on a :func:`nbseg.data.multicrop.collate_multicrop` batch: :meth:`crop_tokens` (frozen
        backbone, saliency) then :meth:`alignment_losses` (decoder, losses).

        Args:
            batch: ``{"global": (B, 3, G, G), "local": (B, V, 3, L, L), ...}`` in [0, 1].
            step: the global step (unused; part of the method protocol).
        Returns:
            ``loss`` (Eq. 11, with gradient) and, detached, ``loss_proto``, ``loss_corr``, ``fg_global`` and
            ``fg_local`` (the fraction of tokens in the saliency masks).
        """
        x_g, m_g, x_l, m_l = self.crop_tokens(batch)
        terms = self.alignment_losses(x_g, m_g, x_l, m_l)
        out = {"loss": terms["loss"]}
        out.update({k: v.detach() for k, v in terms.items() if k != "loss"})
        out["fg_global"] = m_g.float().mean()
        out["fg_local"] = m_l.float().mean()
        return out

    def _cache_signature(self) -> tuple:
        """What the cached crop features depend on besides the item key: the frozen backbone, the data and the crop
        geometry (not ``n_local``: local crop v is the same crop whatever the number drawn after it)."""
        c = self.cfg
        return (self.backbone.name, self.backbone.weights_sha256, c.data, c.data_root, c.split, c.global_size,
                tuple(c.global_scale), c.local_size, tuple(c.local_scale), c.min_intersection, c.use_saliency,
                c.saliency, c.saliency_fraction)

    def parameter_groups(self) -> list[dict]:
        """AdamW groups as released: weight decay ``cfg.weight_decay`` on the decoder's weight matrices, 0 on biases,
        LayerNorm parameters (1-D) and the prototypes. The frozen backbone is never included."""
        decay, no_decay = [], []
        for name, param in self.decoder.named_parameters():
            (no_decay if param.ndim < 2 or name == "prototypes" else decay).append(param)
        return [{"params": decay, "weight_decay": self.cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    # ---- inference --------------------------------------------------------------------------------------
    def _patch_multiple(self, images: torch.Tensor) -> torch.Tensor:
        p = self.backbone.patch_size
        H, W = images.shape[-2:]
        return images if not (H % p or W % p) else resize_to_patch_multiple(images, p)

    @torch.inference_mode()
    def image_prototypes(self, patches: torch.Tensor) -> torch.Tensor:
        """Eq. (1) on frozen patch tokens: (B, h, w, D) -> image-adapted prototypes P^x (B, K, D)."""
        return self.decoder(patches.to(self.device).flatten(1, 2))

    @torch.inference_mode()
    def scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(2) on frozen patch tokens (B, h, w, D) (e.g. cached by :func:`nbseg.features.extract_dataset`)
        -> prototype cosines (B, K, h, w)."""
        patches = patches.to(self.device)
        return prototype_cosine_maps(patches, self.decoder(patches.flatten(1, 2)))

    @torch.inference_mode()
    def similarity(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(2) end to end: images (B, 3, H, W) in [0, 1] -> prototype cosines (B, K, h, w)."""
        feats = self.backbone.extract(self._patch_multiple(images.to(self.device)))
        return self.scores_from_features(feats.patches)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(3) end to end: images (B, 3, H, W) in [0, 1] -> labels (B, H, W) int64 in [0, K). One backbone
        pass, one decoder pass, no post-processing."""
        return segment_by_argmax(self.similarity(images), tuple(images.shape[-2:]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)

    # ---- what produced a result ---------------------------------------------------------------------------
    def provenance(self) -> dict:
        """Method, variant and the backbone's facts (:func:`nbseg.runs.backbone_facts`: name, weights path and
        sha256, random init). The training loop checks it on resume; the config is stored separately."""
        return {"method": "alignseg", "variant": self.cfg.variant, **backbone_facts(self.backbone)}


def training_dataset(cfg: AlignSegConfig) -> MultiCropDataset:
    """The multi-crop training set of ``cfg`` (``dataset[(index, seed)]``; collate with
    :func:`nbseg.data.multicrop.collate_multicrop`): the first ``max_train_images`` images of ``cfg.split``."""
    return MultiCropDataset(load_dataset(cfg.data, cfg.data_root, cfg.split), cfg.crop_spec(),
                            limit=cfg.max_train_images)


def evaluation_dataset(cfg: AlignSegConfig, split: str | None = None):
    """The labelled split AlignSeg is scored on (``cfg.eval_split`` unless ``split``), images and labels resized
    (square; labels nearest) to ``cfg.eval_size`` as the released evaluation does (448 for VOC; the world's 96-px
    images are left as they are at the default 96). World data uses the label set ``cfg.labels``."""
    extra = {"labels": cfg.labels} if cfg.data == "world" else {}
    return load_dataset(cfg.data, cfg.data_root, split or cfg.eval_split, transform=ResizeSquare(cfg.eval_size),
                        **extra)


__all__ = ["SALIENCY_RULES", "AlignSeg", "AlignSegConfig", "AlignSegDecoder", "AlignSegDecoderLayer",
           "CropFeatureCache", "training_dataset", "evaluation_dataset", "check_variant"]
