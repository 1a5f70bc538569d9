"""PGSeg (Zhang et al., NeurIPS 2023): GroupViT trained from image-caption pairs with non-learnable prototypical
regularisation (NPR), segmenting by class *name* with no labels.

The model is a GroupViT image encoder (:mod:`~nbseg.methods.pgseg.groupvit`) and a causal text encoder
(:mod:`~nbseg.methods.pgseg.text`), both trained from scratch on the world's captions (the paper fine-tunes
GroupViT's 30-epoch CC12M+RedCaps weights: a different experiment, docs pitfall 17). Nothing is frozen, so
``frozen_prefixes`` is empty and ``backbone`` is the trained image encoder itself.

``variant`` (docs 6.1-6.2, pitfall 15):

=========================  ======================================  ==========================================
                           ``paper`` (as described)                ``official`` (as released)
=========================  ======================================  ==========================================
Hungarian pairing          maximises total cosine (Alg. 1)         scipy's default: *minimises* it
hard rejection (HRS)       pair i's own similarity (i, i)          column 0 (i, 0)
I-NPR prototypes' EMA      after every training step (Sec. 4.2)    never (the flag is never set)
T-NPR prototypes' EMA      after every training step               on every text encoding, evaluation too
PG temperature             fixed tau = 0.1 (Eq. 3)                 learnable scale from 1/0.1, clamped <= 100
=========================  ======================================  ==========================================

Loss (Eq. 4): ``L = L_IT + lambda sum_l L_PG(G_l, P_l) + beta L_PG(AVG(G_2), T)`` with lambda = 0.1, beta = 0.01
(the released ``0.1 (L_1 + L_2 + 0.1 L_text)``), and lambda = beta = 0 before ``npr_start_epoch`` (the paper: 30
of 40 epochs). T-NPR regularises the last stage's group centres (the released code; Eq. 4 sums over levels, but
T has as many prototypes as the last stage has groups). The EMA uses the batch mean, re-normalised.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from nbseg.errors import ConfigError
from nbseg.methods.pgseg.groupvit import GroupViT
from nbseg.methods.pgseg.losses import (clamped_scale, ema_prototypes, hard_rejection_mask, hungarian_pairing,
                                        paired, pg_loss, scalar_em_prototypes, symmetric_infonce)
from nbseg.methods.pgseg.text import TextEncoder
from nbseg.methods.pgseg.zeroshot import (CAPTION_TEMPLATE, class_scores, final_assignment, group_class_affinity,
                                          labels_with_background, pixel_groups)
from nbseg.train import TrainConfig
from nbseg.world import STUFF_CLASSES, THING_CLASSES

VARIANTS = ("paper", "official")


@dataclass
class PGSegConfig(TrainConfig):
    """PGSeg's settings; ``configs/pgseg_world.yaml`` comments each world value, ``pgseg_voc.yaml`` holds the
    paper's."""

    variant: str = "paper"               # paper | official (module docstring)
    # image encoder (Sec. 5.1: ViT-S, patch 16, 224 px, groups 64 -> 8, PG Units after blocks 6 and 9)
    image_size: int = 96
    patch_size: int = 8
    dim: int = 128
    heads: int = 4
    depth_stage1: int = 2
    depth_stage2: int = 1
    depth_final: int = 1
    groups_stage1: int = 32
    groups_stage2: int = 8
    drop_path: float = 0.0
    embed_dim: int = 128
    # text encoder (CLIP's, width 256, 12 layers, 4 heads, context 77 in the paper)
    text_width: int = 128
    text_depth: int = 2
    text_heads: int = 4
    context_length: int = 48
    vocab_size: int = 512
    # NPR (Sec. 4.1-4.2, 5.1)
    inpr: bool = True
    tnpr: bool = True
    hard_rejection: bool = True
    em_iters: int = 10                   # T
    ema_momentum: float = 0.9            # gamma
    rejection_threshold: float = 0.1     # phi
    pg_temperature: float = 0.1          # tau
    npr_weight: float = 0.1              # lambda
    tnpr_weight: float = 0.01            # beta
    npr_start_epoch: float = 0.0         # lambda = beta = 0 before this (fractional) epoch
    # data
    data: str = "world"
    data_root: str | None = None
    captions_file: str | None = None     # None: DATA_ROOT/captions.jsonl
    train_limit: int | None = None       # train on the first N images (smoke runs)
    # zero-shot inference
    prompt_template: str = CAPTION_TEMPLATE
    prompts: str = ""                    # comma-separated class names for predict(); "" = the world's 13 classes
    background_threshold: float | None = None  # predict(): background (id 0) below it; None: no background
    topk_classes: int = 0                # restrict each image to its top-k classes (0: off; 5 in the paper)
    eval_split: str = "val"
    threshold_images: int = 100          # train images the background threshold is chosen on
    # the paper's schedule is AdamW lr 1.6e-3, wd 0.05, batch 4096, 40 epochs (5 warm-up); ours: the world yaml
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    clip_grad: float = 5.0

    def validate(self) -> None:
        super().validate()
        checks = [
            (self.variant in VARIANTS, f"variant must be one of {list(VARIANTS)}, got {self.variant!r}"),
            (self.image_size % self.patch_size == 0, f"image_size {self.image_size} is not a multiple of "
                                                     f"patch_size {self.patch_size}"),
            (self.dim % self.heads == 0 and self.text_width % self.text_heads == 0,
             "dim / text_width must be divisible by heads / text_heads"),
            (0 < self.groups_stage2 <= self.groups_stage1 <= (self.image_size // self.patch_size) ** 2,
             "need 0 < groups_stage2 <= groups_stage1 <= number of patches"),
            (self.em_iters >= 1 and 0 <= self.ema_momentum <= 1, "em_iters must be >= 1, ema_momentum in [0, 1]"),
            (self.pg_temperature > 0, "pg_temperature must be > 0"),
            (not self.hard_rejection or self.inpr or self.tnpr, "hard_rejection needs inpr or tnpr"),
            (self.background_threshold is None or 0 <= self.background_threshold <= 1,
             "background_threshold must be in [0, 1] (or null)")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


class PGSeg(nn.Module):
    """GroupViT + text encoder + NPR, on ``device``; ``backbone`` (None) is refused: nothing here is frozen."""

    frozen_prefixes: tuple[str, ...] = ()

    def __init__(self, cfg: PGSegConfig, backbone=None, device: str | torch.device = "cpu"):
        super().__init__()
        cfg.validate()
        if backbone is not None:
            raise ConfigError("PGSeg trains its own GroupViT image encoder; it takes no frozen backbone")
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):              # same initial weights on any device
            torch.manual_seed(cfg.seed)
            self.image_encoder = GroupViT(cfg.image_size, cfg.patch_size, cfg.dim, cfg.heads,
                                          (cfg.depth_stage1, cfg.depth_stage2, cfg.depth_final),
                                          (cfg.groups_stage1, cfg.groups_stage2), cfg.inpr, cfg.embed_dim,
                                          cfg.em_iters, cfg.drop_path)
            self.text_encoder = TextEncoder(cfg.vocab_size, cfg.context_length, cfg.text_width, cfg.text_depth,
                                            cfg.text_heads, cfg.embed_dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))       # CLIP init, clamp 100
            # paper: tau fixed; official: a learnable scale initialised at 1/tau
            self.pg_log_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.pg_temperature)),
                                             requires_grad=cfg.variant == "official")
            if cfg.tnpr:
                self.register_buffer("text_prototypes",
                                     nn.functional.normalize(torch.randn(cfg.groups_stage2), dim=0))
        self.steps_per_epoch: int | None = None              # set by the training dataset (the NPR schedule)
        self._prompt_cache: tuple[tuple[str, ...], torch.Tensor] | None = None
        self.to(device)

    # ---- the contract ---------------------------------------------------------------------------------------
    @property
    def backbone(self) -> GroupViT:
        """The image encoder (trained, not frozen): what ``nbseg segment`` asks for its patch size."""
        return self.image_encoder

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def provenance(self) -> dict:
        cfg = self.cfg
        return {"method": "pgseg", "variant": cfg.variant, "backbone": "groupvit-from-scratch", "weights_path": None,
                "weights_sha256": None, "random_init": True,
                "backbone_description": self.image_encoder.describe()}

    # ---- training ---------------------------------------------------------------------------------------------
    def npr_active(self, step: int) -> bool:
        """Whether lambda, beta are on at ``step``: from epoch ``npr_start_epoch`` on (fractions allowed)."""
        if not self.cfg.npr_start_epoch:
            return True
        if not self.steps_per_epoch:
            raise ConfigError("npr_start_epoch needs steps_per_epoch (set by pgseg's training_dataset)")
        return step >= self.cfg.npr_start_epoch * self.steps_per_epoch

    def _pairing_and_keep(self, groups: torch.Tensor, protos: torch.Tensor):
        """Hungarian pairing (variant's direction) and the HRS mask of groups (B, G, D) to prototypes (B, G, D)."""
        official = self.cfg.variant == "official"
        cos = nn.functional.normalize(groups.detach(), dim=-1) @ nn.functional.normalize(protos, dim=-1).transpose(1, 2)
        pairing = hungarian_pairing(cos, maximize=not official)
        protos = paired(protos, pairing)
        keep = None
        if self.cfg.hard_rejection:
            cos_paired = torch.gather(cos, 2, pairing.unsqueeze(1).expand(-1, cos.shape[1], -1))
            keep = hard_rejection_mask(cos_paired, self.cfg.rejection_threshold, diagonal=not official)
        return protos, keep

    def _pg_term(self, groups: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """L_PG (Eq. 3) of group centres (B, G, D) and their (unpaired, detached) prototypes (B, G, D)."""
        protos, keep = self._pairing_and_keep(groups, protos)
        return pg_loss(groups, protos.detach(), clamped_scale(self.pg_log_scale), keep)

    def training_step(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """One step on ``{"image": (B, 3, H, W) in [0, 1], "tokens": (B, L)}`` -> ``loss`` (Eq. 4) and its terms."""
        cfg = self.cfg
        self._prompt_cache = None                            # the text encoder changes: cached prompts go stale
        out = self.image_encoder.forward_features(batch["image"].float())
        image = self.image_encoder.image_embedding(out.tokens)
        text_features = self.text_encoder.features(batch["tokens"])
        text = self.text_encoder.projection(text_features)
        l_it = symmetric_infonce(image, text, clamped_scale(self.logit_scale))
        terms = {"l_it": l_it.detach()}
        loss = l_it
        active = self.npr_active(step)
        if cfg.inpr:
            l_img = sum(self._pg_term(s.grouped.centres, s.prototypes) for s in out.stages)
            terms["l_pg_image"] = l_img.detach()
            loss = loss + (cfg.npr_weight if active else 0.0) * l_img
            if cfg.variant == "paper":
                with torch.no_grad():
                    for stage, s in zip(self.image_encoder.stages, out.stages):
                        stage.prototypes.copy_(ema_prototypes(stage.prototypes, s.prototypes, cfg.ema_momentum))
        if cfg.tnpr:
            protos = self.text_npr(text_features).unsqueeze(-1)                      # (B, G2, 1)
            centres = out.stages[-1].grouped.centres.mean(-1, keepdim=True)            # AVG(G_2): (B, G2, 1)
            l_txt = self._pg_term(centres, protos)
            terms["l_pg_text"] = l_txt.detach()
            loss = loss + (cfg.tnpr_weight if active else 0.0) * l_txt
        return {"loss": loss, **terms, "logit_scale": clamped_scale(self.logit_scale).detach()}

    @torch.no_grad()
    def text_npr(self, text_features: torch.Tensor) -> torch.Tensor:
        """T-NPR prototypes (B, G2) of text features (B, C) (scalar EM), with the variant's EMA of the buffer."""
        protos = scalar_em_prototypes(text_features.detach(), self.text_prototypes, self.cfg.em_iters)
        if self.training or self.cfg.variant == "official":
            self.text_prototypes.copy_(ema_prototypes(self.text_prototypes[None], protos[..., None],
                                                      self.cfg.ema_momentum)[0])
        return protos

    # ---- zero-shot inference ----------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        names = [n.strip() for n in self.cfg.prompts.split(",") if n.strip()]
        return names or THING_CLASSES + STUFF_CLASSES

    def prompt_embeddings(self, names: list[str], template: str | None = None) -> torch.Tensor:
        """Class names -> (K, E) text embeddings of ``template.format(name)`` (cached per name list). Under
        ``variant: official`` with T-NPR, encoding texts also runs the T-NPR EMA, as the released code does."""
        template = template or self.cfg.prompt_template
        key = (template, *names)
        if self._prompt_cache is None or self._prompt_cache[0] != key:
            texts = [template.format(n) for n in names]
            unknown = self.text_encoder.tokenizer.unknown(texts)
            if unknown:
                warnings.warn(f"prompt word(s) {unknown} never occur in the training captions: they are read as "
                              "<unk>; use the captions' words (e.g. a synonym)", stacklevel=2)
            features = self.text_encoder.features(self.text_encoder.tokenizer.encode(texts).to(self.device))
            if self.cfg.tnpr and self.cfg.variant == "official":
                self.text_npr(features)
            self._prompt_cache = (key, self.text_encoder.projection(features).detach())
        return self._prompt_cache[1]

    @torch.no_grad()
    def zero_shot(self, images: torch.Tensor, names: list[str], template: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> (pixel groups (B, H, W), affinity (B, G2, K)) for ``names``; the labels
        are :func:`~nbseg.methods.pgseg.zeroshot.labels_with_background` of the two."""
        images = images.to(self.device, torch.float32)
        out = self.image_encoder.forward_features(images)
        return self.groups_for(out, names, template, tuple(images.shape[-2:]))

    def groups_for(self, out, names: list[str], template: str | None, size: tuple[int, int]):
        """Encoder output -> (pixel -> stage-2 group (B, H, W) at ``size``, group -> class affinity (B, G2, K)) for
        ``names``."""
        encoder = self.image_encoder
        image = encoder.image_embedding(out.tokens) if self.cfg.topk_classes else None   # only top-k reads it
        affinity = group_class_affinity(encoder.group_embeddings(out.tokens), self.prompt_embeddings(names, template),
                                        clamped_scale(self.logit_scale), image, self.cfg.topk_classes)
        assignment = final_assignment(out.stages[0].grouped.soft, out.stages[1].grouped.soft)
        return pixel_groups(assignment, out.grid, size), affinity

    @torch.no_grad()
    def scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        """The encoder's patch tokens (B, h, w, D) (after the patch embedding) -> class scores (B, K, h, w) for
        the configured prompts."""
        B, h, w, D = patches.shape
        out = self.image_encoder.encode_tokens(patches.reshape(B, h * w, D).to(self.device), (h, w))
        return class_scores(*self.groups_for(out, self.class_names(), None, (h, w)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> (B, H, W) int64 class ids of the configured prompts (with
        ``background_threshold``: 0 = background, 1..K the prompts)."""
        groups, affinity = self.zero_shot(images, self.class_names())
        return labels_with_background(groups, affinity, self.cfg.background_threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)


__all__ = ["PGSeg", "PGSegConfig", "VARIANTS"]
