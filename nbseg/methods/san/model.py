"""SAN (Zhang et al., AAAI 2023, "Rethinking Alignment and Uniformity in Unsupervised Image Semantic Segmentation"):
a CNN pixel-wise encoder and a randomly initialised ViT semantic generator, matched by semantic attention (SEAT) and
held together by image reconstruction. **No pretrained model**: both networks are trained from scratch.

No code was released (docs/official_implementations.md Sec. 4): every choice below comes from the paper's text and
figures, or is ours where they are silent. The pure tensor functions are in :mod:`nbseg.methods.san.seat` (Eq. 3-4,
the token matcher) and :mod:`nbseg.methods.san.losses` (Eq. 5-9).

Choices the paper leaves open, and what we chose (each is a config key where that makes sense):

1. **Pixel-wise encoder** (Fig. 3a, Table 4's "3x3 Conv"): ``Conv3x3(in -> P/2) -> BN -> GELU -> Conv1x1(P/2 -> P)``
   at full resolution ("the input dimension is scaled to P/2 ... then to the standard length of P"). Input: the image
   standardised as ``(x - 0.5) / 0.25`` per channel (the paper names no normalisation); ``input_mode: sobel`` feeds
   the Sobel gradients of the grey image instead (IIC's COCO input), ``rgb_sobel`` both.
2. **Semantic generator**: timm's ``VisionTransformer`` at random init, patch 8, 6 blocks, width P, no class token
   and no head ("we remove the commonly used one layer MLP"), final LayerNorm kept; heads ``vit_heads``. It sees
   the image resized to ``crop_size`` (its positional embedding is fixed), so inference works at any image size.
3. **Batch-wise semantics** (Eq. 4, ``S = F_S(sum_n x_n)``): the ViT runs on each image and its K output tokens are
   averaged over the batch (``semantics: batch``); ``semantics: image`` keeps one set per image (Table 5's
   "without batch-wise information").
4. **Multi-head generator** (Fig. 3b): N heads, head j = a learned weighting of the K tokens (one ``Linear(K, N)``
   over the token axis), then a shared ``LayerNorm -> Linear(P, P) -> GELU -> Linear(P, P)``: zeta (N, P).
5. **Token matcher** (Fig. 3c): ``p = act(MLP(mean_k t_k))`` from the image's own tokens, MLP ``P -> P -> N`` with
   GELU; ``token_matcher: simplex`` (softmax, the text's p in Delta^N, default), ``sigmoid`` (the figure's
   legend) or ``none`` (p = 1). ``Gamma = p x zeta`` scales each semantic embedding.
6. **SEAT** (Eq. 3) with d = P; inference is ``argmax_N Q Gamma^T`` (no softmax needed).
7. **Consistency sustainer**: one shared 1x1 decoder F_G, ``Conv1x1(P -> decoder_hidden) -> GELU -> Conv1x1(-> 3)``
   ("a shallow 1x1 convolution neural network"), reconstructing the RGB image in [0, 1] (also under Sobel input).
   ``consistency: image`` is Eq. (9) as printed, ``||F_G(Theta) - x||^2``; ``embedding`` is Eq. (5)/(7),
   ``||Theta - Q||^2``. Without reconstruction (``reconstruction: false``, Table 5's first row) no image term is
   left, so the consistency falls back to the ``embedding`` form: the loss is Eq. (7).
8. **Orthogonality**: ``||S S^T - I||^2`` on zeta (see :mod:`nbseg.methods.san.losses` for why not ``S^T S``),
   weight ``orthogonality_weight`` 1 (the paper gives none); ``orthogonality: cosine | none`` are the alternatives.
9. **Evaluation batch composition.** zeta depends on the batch, so a prediction depends on which images come with
   it. ``eval_semantics: batch`` scores the split in fixed consecutive batches of ``eval_batch_size`` images (split
   order); ``memory`` uses a running mean of zeta kept during training (momentum ``memory_momentum``), so a
   prediction depends on its image only. Both are scored and every number says which produced it.
10. **N and optimisation**: N = the classes of the label set (the paper: "the number of the semantics of the entire
    dataset"); Adam (the shared loop's AdamW with weight decay 0), lr 1e-4, 30 epochs (Sec. Experiments),
    constant lr (no schedule named).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from nbseg.backbones import resize_to_patch_multiple
from nbseg.errors import ConfigError, NbsegError
from nbseg.methods.san.losses import (CONSISTENCY_FORMS, ORTHOGONALITY_FORMS, consistency_loss, orthogonality_loss,
                                      reconstruction_loss)
from nbseg.methods.san.seat import (MATCHERS, batchwise_tokens, class_weights, matched_semantics, seat,
                                    semantic_logits)
from nbseg.runs import backbone_facts
from nbseg.train import TrainConfig

SEMANTICS = ("batch", "image")
EVAL_SEMANTICS = ("batch", "memory")
INPUT_MODES = {"rgb": 3, "sobel": 2, "rgb_sobel": 5}


@dataclass
class SANConfig(TrainConfig):
    """SAN's settings on top of the shared training knobs; ``configs/san_world.yaml`` comments every value."""

    # data
    data: str = "world"
    data_root: str | None = None
    split: str = "train"
    eval_split: str = "val"
    labels: str = "coarse"               # world label set (coarse = the COCO-Stuff-3 analogue)
    limit: int | None = None             # train on the first N images
    prescale: float = 1.0                # IIC: COCO images x 0.33 before cropping
    crop_size: int = 96                  # paper / IIC: 128; the world's images are 96 px
    hflip: bool = True
    colour_jitter: float = 0.0           # IIC's Potsdam jitter 0.1
    input_mode: str = "rgb"              # rgb | sobel (IIC's COCO input) | rgb_sobel
    # network (paper: P = 1024, ViT-6, patch 8)
    embed_dim: int = 64                  # P
    n_prototypes: int = 3                # N semantic embeddings
    patch_size: int = 8
    vit_depth: int = 6
    vit_heads: int = 4
    decoder_hidden: int = 32             # F_G's hidden width (0: a single 1x1 conv)
    # the paper's ambiguities, one switch each (module docstring)
    semantics: str = "batch"
    token_matcher: str = "simplex"
    consistency: str = "image"
    reconstruction: bool = True
    orthogonality: str = "frobenius"
    orthogonality_weight: float = 1.0
    eval_semantics: str = "batch"
    eval_batch_size: int | None = None   # None: batch_size
    memory_momentum: float = 0.99
    # optimisation (paper: Adam, lr 1e-4, 30 epochs)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-4
    weight_decay: float = 0.0

    def validate(self) -> None:
        super().validate()
        choices = {"semantics": SEMANTICS, "token_matcher": MATCHERS, "consistency": CONSISTENCY_FORMS,
                   "orthogonality": ORTHOGONALITY_FORMS, "eval_semantics": EVAL_SEMANTICS,
                   "input_mode": tuple(INPUT_MODES)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {list(allowed)}")
        checks = [(self.embed_dim >= 2 and self.embed_dim % 2 == 0, f"embed_dim (P) must be even and >= 2, got "
                                                                    f"{self.embed_dim}"),
                  (self.embed_dim % self.vit_heads == 0, f"embed_dim {self.embed_dim} is not divisible by "
                                                         f"vit_heads={self.vit_heads}"),
                  (self.n_prototypes >= 2, f"n_prototypes (N) must be >= 2, got {self.n_prototypes}"),
                  (self.crop_size % self.patch_size == 0, f"crop_size {self.crop_size} is not a multiple of "
                                                          f"patch_size {self.patch_size}"),
                  (self.prescale > 0 and 0 <= self.colour_jitter < 1, "prescale must be > 0 and colour_jitter "
                                                                      "in [0, 1)"),
                  (0 <= self.memory_momentum < 1, "memory_momentum must be in [0, 1)"),
                  (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def in_chans(self) -> int:
        return INPUT_MODES[self.input_mode]


@dataclass(frozen=True)
class FromScratch:
    """What stands where other methods hold a frozen backbone: SAN has none (both networks train from scratch).
    It answers what generic code asks a backbone (patch size, name, weights, description) truthfully."""

    patch_size: int
    name: str = "none (SAN: trained from scratch, no pretrained model)"
    weights_path: None = None
    weights_sha256: None = None
    random_init: bool = False

    def describe(self) -> str:
        return "no pretrained model: SAN's CNN encoder and ViT generator are trained from scratch"


def network_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> the networks' input (B, C, H, W): ``(x - 0.5) / 0.25`` (rgb), the Sobel
    gradients (d/dx, d/dy) of the grey image (sobel, IIC's COCO input), or both (rgb_sobel)."""
    rgb = (images - 0.5) / 0.25
    if mode == "rgb":
        return rgb
    grey = images.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=images.device)
    sobel = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), torch.stack([kx, kx.T])[:, None])
    return sobel if mode == "sobel" else torch.cat([rgb, sobel], 1)


class PixelEncoder(nn.Sequential):
    """F_Q, Fig. 3a: (B, C, H, W) -> pixel-wise embeddings Q (B, P, H, W) at full resolution."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__(nn.Conv2d(in_chans, dim // 2, 3, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
                         nn.Conv2d(dim // 2, dim, 1))


class MultiHeadGenerator(nn.Module):
    """Fig. 3b: tokens (..., K, P) -> N semantic embeddings zeta (..., N, P) (module docstring, choice 4)."""

    def __init__(self, n_tokens: int, n_semantics: int, dim: int):
        super().__init__()
        self.heads = nn.Linear(n_tokens, n_semantics)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.heads(tokens.transpose(-1, -2)).transpose(-1, -2))


def reconstruction_decoder(dim: int, hidden: int) -> nn.Module:
    """F_G: embeddings (B, P, H, W) -> an RGB image (B, 3, H, W) by 1x1 convolutions (choice 7)."""
    if hidden <= 0:
        return nn.Conv2d(dim, 3, 1)
    return nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 3, 1))


class SAN(nn.Module):
    """The semantic attention network (Fig. 2). ``backbone`` is a :class:`FromScratch` (nothing is frozen)."""

    frozen_prefixes: tuple[str, ...] = ()

    def __init__(self, cfg: SANConfig, backbone=None, device: str | torch.device = "cpu"):
        super().__init__()
        cfg.validate()
        if backbone is not None:
            raise ConfigError("SAN uses no pretrained backbone (it trains from scratch); do not pass one")
        self.cfg, self.backbone = cfg, FromScratch(cfg.patch_size)
        P, N = cfg.embed_dim, cfg.n_prototypes
        n_tokens = (cfg.crop_size // cfg.patch_size) ** 2
        with torch.random.fork_rng(devices=[]):              # initialised on the CPU: same weights on any device
            torch.manual_seed(cfg.seed)
            self.encoder = PixelEncoder(cfg.in_chans, P)
            self.generator = VisionTransformer(img_size=cfg.crop_size, patch_size=cfg.patch_size,
                                               in_chans=cfg.in_chans, num_classes=0, global_pool="avg",
                                               embed_dim=P, depth=cfg.vit_depth, num_heads=cfg.vit_heads,
                                               class_token=False, fc_norm=False)
            self.heads = MultiHeadGenerator(n_tokens, N, P)
            self.matcher = nn.Sequential(nn.Linear(P, P), nn.GELU(), nn.Linear(P, N))
            self.decoder = reconstruction_decoder(P, cfg.decoder_hidden)
        self.register_buffer("zeta_memory", torch.zeros(N, P))
        self.register_buffer("memory_updates", torch.zeros((), dtype=torch.long))
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.zeta_memory.device

    # ---- the pieces of Fig. 2 -----------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> (Q (B, P, H, W), ViT tokens (B, K, P) of the image at crop_size)."""
        x = network_input(images.to(self.device, torch.float32), self.cfg.input_mode)
        tokens = self.generator.forward_features(resize_to_patch_multiple(x, self.cfg.patch_size,
                                                                          self.cfg.crop_size))
        return self.encoder(x), tokens

    def semantics(self, tokens: torch.Tensor) -> torch.Tensor:
        """zeta: tokens (B, K, P) -> (N, P) batch-wise (``semantics: batch``) or (B, N, P) per image."""
        return self.heads(batchwise_tokens(tokens) if self.cfg.semantics == "batch" else tokens)

    def matched(self, tokens: torch.Tensor, zeta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The token matcher: (Gamma (B, N, P), p (B, N)) from the images' tokens (B, K, P) and zeta."""
        p = class_weights(self.matcher(tokens.mean(1)), self.cfg.token_matcher)
        return matched_semantics(p, zeta), p

    # ---- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        """One step on ``{"image": (B, 3, H, W) in [0, 1]}``: Eq. (9) (or Eq. 7 without reconstruction).
        Returns ``loss`` and, for the log, its terms and ``clusters_used`` (distinct argmax semantics)."""
        cfg = self.cfg
        image = batch["image"].to(self.device, torch.float32)
        q_map, tokens = self.embed(image)
        B, P, H, W = q_map.shape
        zeta = self.semantics(tokens)
        gamma, p = self.matched(tokens, zeta)
        q = q_map.flatten(2).transpose(1, 2)                                    # (B, n, P)
        theta, attention = seat(q, gamma)
        terms = {"orthogonality": orthogonality_loss(zeta, cfg.orthogonality)}
        if cfg.reconstruction:
            terms["reconstruction"] = reconstruction_loss(self.decoder(q_map), image)
            form = cfg.consistency
        else:
            form = "embedding"
        theta_map = theta.transpose(1, 2).reshape(B, P, H, W)
        terms["consistency"] = consistency_loss(form, theta=theta, q=q, image=image,
                                                theta_reconstruction=self.decoder(theta_map)
                                                if form == "image" else None)
        loss = terms["consistency"] + terms.get("reconstruction", 0.0) + cfg.orthogonality_weight * \
            terms["orthogonality"]
        with torch.no_grad():
            self._remember(zeta.detach() if zeta.ndim == 2 else zeta.detach().mean(0))
            used = attention.argmax(-1).unique().numel()
        return {"loss": loss, **terms, "clusters_used": torch.tensor(float(used)),
                "p_max": p.detach().max(-1).values.mean()}

    def _remember(self, zeta: torch.Tensor) -> None:
        """Running mean of zeta (N, P) for ``eval_semantics: memory`` (the first step copies it)."""
        m = self.cfg.memory_momentum if int(self.memory_updates) else 0.0
        self.zeta_memory.mul_(m).add_((1 - m) * zeta)
        self.memory_updates += 1

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def scores(self, images: torch.Tensor, eval_semantics: str | None = None) -> torch.Tensor:
        """``Q Gamma^T / sqrt(P)``: images (B, 3, H, W) in [0, 1] -> (B, N, H, W). ``eval_semantics`` (default the
        config's): ``batch`` (zeta from these B images: the result depends on the batch) or ``memory``."""
        mode = eval_semantics or self.cfg.eval_semantics
        if mode not in EVAL_SEMANTICS:
            raise ConfigError(f"eval_semantics {mode!r} is not one of {list(EVAL_SEMANTICS)}")
        q_map, tokens = self.embed(images)
        B, P, H, W = q_map.shape
        if mode == "memory":
            if not int(self.memory_updates):
                raise NbsegError("SAN's running memory of zeta is empty (the model was never trained): use "
                                 "eval_semantics='batch', or train it first")
            zeta = self.zeta_memory
        else:
            zeta = self.semantics(tokens)
        gamma, _ = self.matched(tokens, zeta)
        logits = semantic_logits(q_map.flatten(2).transpose(1, 2), gamma)
        return logits.transpose(1, 2).reshape(B, -1, H, W)

    def predict(self, images: torch.Tensor, eval_semantics: str | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> semantic ids (B, H, W) int64 in [0, N) at the images' size."""
        return self.scores(images, eval_semantics).argmax(1)

    @torch.inference_mode()
    def pixel_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Q of images (B, 3, H, W) in [0, 1] -> (B, P, H, W) (the collapse diagnostics' effective rank)."""
        return self.embed(images)[0]

    def scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Not available: SAN has no frozen features to score (its ``Gamma`` needs the images); use ``scores``."""
        raise NbsegError("SAN has no frozen backbone features: score images with SAN.scores(images)")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict(images)

    def provenance(self) -> dict:
        """Method and 'backbone' facts (none: trained from scratch); the loop checks them on resume."""
        return {"method": "san", **backbone_facts(self.backbone)}


__all__ = ["SAN", "SANConfig", "FromScratch", "PixelEncoder", "MultiHeadGenerator", "network_input",
           "reconstruction_decoder", "SEMANTICS", "EVAL_SEMANTICS", "INPUT_MODES"]
