"""The frozen :class:`Backbone` and what it extracts (:class:`Features`): patch tokens, the CLS token and the last
block's CLS attention, computed from the ``qkv`` projection the fused kernel consumes anyway."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nbseg.errors import WeightsError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Features", "cls_attention_from_qkv", "Backbone",
           "resize_to_patch_multiple"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Features:
    """Output of :meth:`Backbone.extract`. Shapes: patches (B, h, w, D), cls (B, D), attn (B, heads, h, w)."""

    patches: torch.Tensor
    cls: torch.Tensor
    attn: torch.Tensor

    def to(self, device) -> "Features":
        return Features(self.patches.to(device), self.cls.to(device), self.attn.to(device))


def cls_attention_from_qkv(qkv: torch.Tensor, num_heads: int, scale: float, num_prefix_tokens: int,
                           q_norm: nn.Module | None = None, k_norm: nn.Module | None = None) -> torch.Tensor:
    """Softmax attention of the CLS query over all tokens, from a block's fused qkv projection.

    ``softmax(q_cls k^T * scale)`` (the first row of DINO's last-layer attention) restricted to patch keys.

    Args:
        qkv: (B, N, 3 * heads * head_dim) output of ``attn.qkv`` on ``norm1(x)``; token 0 is CLS.
    Returns:
        (B, heads, N - num_prefix_tokens) attention from CLS to each patch (rows sum to 1 over *all* N tokens,
        as in DINO; the prefix columns are dropped after the softmax).
    """
    B, N, three_c = qkv.shape
    head_dim = three_c // (3 * num_heads)
    q, k, _ = qkv.reshape(B, N, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if q_norm is not None:
        q, k = q_norm(q), k_norm(k)
    logits = (q[:, :, :1] * scale) @ k.transpose(-2, -1)          # (B, heads, 1, N)
    return logits.float().softmax(dim=-1)[:, :, 0, num_prefix_tokens:]


class Backbone(nn.Module):
    """A frozen ViT that extracts patch tokens, the CLS token and the last block's CLS attention."""

    def __init__(self, model: nn.Module, name: str, *, weights_path: str | None, weights_sha256: str,
                 random_init: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD, training: str | None = None):
        super().__init__()
        self.training_source = training      # how the weights were trained, when nbseg knows (embedded backbones)
        if not hasattr(model, "blocks") or not hasattr(model.blocks[-1], "attn"):
            raise WeightsError(f"{name}: nbseg backbones must be timm VisionTransformers (blocks[-1].attn)")
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self.random_init = random_init
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._qkv: torch.Tensor | None = None
        model.blocks[-1].attn.qkv.register_forward_hook(self._capture_qkv)

    # ---- what a backbone is -------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        ps = self.model.patch_embed.patch_size
        return int(ps[0] if isinstance(ps, (tuple, list)) else ps)

    @property
    def dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def num_heads(self) -> int:
        return int(self.model.blocks[-1].attn.num_heads)

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def describe(self) -> str:
        """One line for figure titles and tables: which backbone and which weights produced a result."""
        if self.random_init:
            return f"{self.name} (RANDOM INIT)"
        src = Path(self.weights_path).name if self.weights_path else "hub"
        how = f"{self.training_source}, " if self.training_source else ""
        return f"{self.name} ({how}{src}, sha256 {self.weights_sha256[:10]})"

    def info(self) -> dict:
        return {"name": self.name, "weights_path": self.weights_path, "weights_sha256": self.weights_sha256,
                "random_init": self.random_init, "training": self.training_source,
                "patch_size": self.patch_size, "dim": self.dim,
                "num_heads": self.num_heads}

    # ---- extraction ----------------------------------------------------------------------------------
    def _capture_qkv(self, module, inputs, output) -> None:
        self._qkv = output

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Check and normalise float images in [0, 1], (B, 3, H, W) with H, W multiples of the patch size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"extract expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"extract expects float images in [0, 1], got dtype {images.dtype} "
                             "(divide uint8 images by 255)")
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}: resize or crop to "
                             f"{H // p * p}x{W // p * p}")
        return (images.to(self.device, torch.float32) - self.mean) / self.std

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, amp: bool | None = None) -> Features:
        """Patch tokens, CLS token and last-block CLS->patch attention for float images in [0, 1].

        Args:
            images: (B, 3, H, W) float in [0, 1]; H and W multiples of ``patch_size``; any size (the positional
                embedding is interpolated).
            amp: bf16 autocast; default on for CUDA, off on CPU.
        Returns:
            :class:`Features` with patches (B, h, w, D), cls (B, D), attn (B, heads, h, w), all float32.
        """
        x = self.normalise(images)
        B, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        amp = (x.device.type == "cuda") if amp is None else amp
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            tokens = self.model.forward_features(x)               # (B, prefix + h*w, D), after the final norm
        attn_mod = self.model.blocks[-1].attn
        qn = attn_mod.q_norm if not isinstance(attn_mod.q_norm, nn.Identity) else None
        kn = attn_mod.k_norm if qn is not None else None
        attn = cls_attention_from_qkv(self._qkv, attn_mod.num_heads, attn_mod.scale, self.num_prefix_tokens, qn, kn)
        self._qkv = None
        npt = self.num_prefix_tokens
        tokens = tokens.float()
        return Features(patches=tokens[:, npt:].reshape(B, h, w, -1), cls=tokens[:, 0],
                        attn=attn.reshape(B, -1, h, w))

    @torch.inference_mode()
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """timm's plain ``forward_features`` on normalised images (the reference the benchmark compares with)."""
        return self.model.forward_features(self.normalise(images))

    def forward(self, images: torch.Tensor) -> Features:  # nn.Module protocol
        return self.extract(images)

    def train(self, mode: bool = True) -> "Backbone":
        # A frozen backbone stays in eval mode (no dropout, no drop-path) whatever its parent module does.
        return super().train(False)


def resize_to_patch_multiple(images: torch.Tensor, patch_size: int, size: int | tuple[int, int] | None = None
                             ) -> torch.Tensor:
    """Bilinearly resize (B, 3, H, W) images to ``size`` (or the nearest lower multiple of ``patch_size``)."""
    if size is None:
        H, W = images.shape[-2:]
        size = (max(patch_size, H // patch_size * patch_size), max(patch_size, W // patch_size * patch_size))
    elif isinstance(size, int):
        size = (size, size)
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
