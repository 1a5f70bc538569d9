"""Masked autoencoding (MAE; He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022) as an
objective of ``nbseg pretrain``, alone (``dino_loss_weight=0``) or beside DINO.

Why it is here: on the embedded world every DINO-family objective nbseg tried learned instance colour first (the
world's colours carry no class), while the supervised ceiling shows the ViT can hold the classes. To rebuild a
hidden patch from its visible neighbours the encoder has to recognise which region a patch belongs to and that
region's texture (type, period, orientation), and with MAE's per-patch normalised targets (``norm_pix_loss``) the
region's mean colour and contrast are no help.

The pieces follow the paper (Sec. 3):

* random masking: each image keeps a uniformly random subset of ``(1 - r) N`` patches (r = 0.75);
* the encoder (the backbone being pretrained: timm's own patch embedding, positions, blocks and final norm) sees
  the visible patches and the CLS token only;
* a light decoder embeds them to ``decoder_dim``, puts a shared learned mask token at every hidden position,
  adds its own positional embedding, runs ``depth`` Transformer blocks and predicts the ``p * p * 3`` values of
  every patch;
* the loss is the mean squared error on the hidden patches, against per-patch normalised pixels.

Design choices of nbseg (not in the paper, which trains at 224 px): the decoder's positional embedding is learned
(not fixed sine-cosine) and sized for the training grid; the MAE view is a random resized crop with a flip and
no photometric change (the paper's augmentation), made from the same batch as DINO's views.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from nbseg.pretrain.batched_augment import random_crop_thetas

__all__ = ["random_token_masking", "patchify", "norm_pix_targets", "masked_reconstruction_loss", "MAEDecoder",
           "encode_visible", "mae_loss", "mae_view"]


def random_token_masking(batch: int, n_tokens: int, mask_ratio: float, gen: torch.Generator, device
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by sorting uniform noise (MAE, Sec. 3, "Masking").

    Returns ``keep`` (B, K) indices of the visible tokens (K = round((1 - mask_ratio) * N), at least 1),
    ``restore`` (B, N), the permutation that puts [visible, hidden] tokens back in their positions, and
    ``hidden`` (B, N) bool, true where a token is masked.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    n_keep = max(1, int(round(n_tokens * (1 - mask_ratio))))
    order = torch.rand(batch, n_tokens, generator=gen, device=device).argsort(dim=1)
    restore = order.argsort(dim=1)
    hidden = torch.ones(batch, n_tokens, dtype=torch.bool, device=device)
    hidden[:, :n_keep] = False
    return order[:, :n_keep], restore, torch.gather(hidden, 1, restore)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H / p) (W / p), p * p * C): row-major patches, each flattened as (p, p, C)."""
    B, C, H, W = images.shape
    if H % patch or W % patch:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {patch}")
    h, w = H // patch, W // patch
    x = images.reshape(B, C, h, patch, w, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, h * w, patch * patch * C)


def norm_pix_targets(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's ``norm_pix_loss`` target: each patch's values standardised by their own mean and variance,
    ``(x - mean(x)) / sqrt(var(x) + eps)`` over the last dim. (B, N, P) -> (B, N, P)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """MAE's loss: mean over hidden patches of the per-patch mean squared error.

    pred, target (B, N, P); hidden (B, N) bool -> scalar ``sum_{b,n} m_bn ||pred_bn - target_bn||^2 / P / sum m``.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    m = hidden.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp(min=1.0)


def encode_visible(vit: nn.Module, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Run a timm ViT on the CLS token and the visible patches only.

    images (B, 3, H, W) normalised, keep (B, K) patch indices -> (B, prefix + K, D) final-norm tokens. Uses
    timm's own embedding steps (``patch_embed``, ``_pos_embed``: positions resampled to the grid, CLS
    prepended), so a visible token gets exactly the position it has in a full forward.
    """
    tokens = vit._pos_embed(vit.patch_embed(images))          # (B, prefix + N, D)
    prefix = getattr(vit, "num_prefix_tokens", 1)
    D = tokens.shape[-1]
    visible = torch.gather(tokens[:, prefix:], 1, keep.unsqueeze(-1).expand(-1, -1, D))
    tokens = torch.cat([tokens[:, :prefix], visible], dim=1)
    return vit.norm(vit.blocks(vit.norm_pre(tokens)))


class MAEDecoder(nn.Module):
    """MAE's light decoder: (B, prefix + K, D_enc) encoder tokens + ``restore`` -> (B, N, p * p * 3) pixels."""

    def __init__(self, encoder_dim: int, n_tokens: int, patch: int, dim: int = 128, depth: int = 2,
                 heads: int = 4, prefix: int = 1):
        super().__init__()
        self.prefix, self.n_tokens = prefix, n_tokens
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, prefix + n_tokens, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch * patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, encoded: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.embed(encoded)
        B, n_visible = x.shape[0], x.shape[1] - self.prefix
        if restore.shape[1] != self.n_tokens:
            raise ValueError(f"the decoder was built for {self.n_tokens} patches, got {restore.shape[1]}")
        patches = torch.cat([x[:, self.prefix:], self.mask_token.expand(B, self.n_tokens - n_visible, -1)], dim=1)
        patches = torch.gather(patches, 1, restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :self.prefix], patches], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(x)))[:, self.prefix:]


def mae_loss(vit: nn.Module, decoder: MAEDecoder, images: torch.Tensor, pixels: torch.Tensor, mask_ratio: float,
             gen: torch.Generator) -> torch.Tensor:
    """One MAE loss: mask, encode the visible patches, decode every patch, score the hidden ones.

    images (B, 3, H, W): the encoder's normalised input; pixels: the image the targets come from (the same
    crop; its per-patch standardisation makes the result independent of a per-channel affine normalisation).
    """
    patch = vit.patch_embed.patch_size[0]
    target = norm_pix_targets(patchify(pixels, patch))
    keep, restore, hidden = random_token_masking(images.shape[0], target.shape[1], mask_ratio, gen, images.device)
    pred = decoder(encode_visible(vit, images, keep), restore)
    return masked_reconstruction_loss(pred, target, hidden)


def mae_view(images: torch.Tensor, size: int, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """MAE's augmentation, batched: a random resized crop (area fraction ~ U(scale)) with a horizontal flip,
    no photometric change. images (B, 3, H, W) in [0, 1] -> (B, 3, size, size)."""
    theta = random_crop_thetas(images.shape[0], scale, gen, images.device)
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
