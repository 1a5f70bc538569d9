"""The ViT architectures nbseg creates: any timm ViT name, and nbseg's own small ViTs (registered with timm here,
so ``timm.create_model(VIT_TINY)`` works like any timm name)."""
from __future__ import annotations

import timm
import torch
from timm.layers import Format
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from nbseg.errors import WeightsError

__all__ = ["VIT_TINY", "VIT_TINY_CONVSTEM", "ConvStemPatchEmbed", "create_model"]

VIT_TINY = "nbseg_vit_tiny_patch8"                    # ViT-Tiny/8 sized for the 96-px world
VIT_TINY_CONVSTEM = "nbseg_vit_tiny_convstem_patch8"  # the same with a convolutional patch embedding


class ConvStemPatchEmbed(nn.Module):
    """A patch embedding made of convolutions (Xiao et al., "Early convolutions help transformers see better",
    NeurIPS 2021): three 3x3 stride-2 conv + BN + ReLU layers (3 -> 24 -> 48 -> 96 channels) and a 1x1 projection to
    ``embed_dim``, so each token sees its 8x8 patch (and a little context) through a small CNN instead of one linear
    map. Same interface and output as timm's ``PatchEmbed`` with ``patch_size=8`` (what ``VisionTransformer`` asks
    of its ``embed_layer``): (B, 3, H, W) -> (B, H/8, W/8, D) with ``output_fmt="NHWC"``, else (B, H/8 * W/8, D).

    Why nbseg ships it: a plain ViT learns local texture from scratch slowly, and the embedded backbone is trained
    on 2 CPU cores (see the model card's learning curves)."""

    def __init__(self, img_size=64, patch_size=8, in_chans=3, embed_dim=192, bias=True, strict_img_size=True,
                 output_fmt=None, dynamic_img_pad=False, norm_layer=None, flatten=True, **_):
        super().__init__()
        if patch_size != 8:
            raise WeightsError(f"ConvStemPatchEmbed makes patches of 8 px (three stride-2 convs), not {patch_size}")
        self.patch_size = (8, 8)
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.grid_size = (self.img_size[0] // 8, self.img_size[1] // 8)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad = dynamic_img_pad
        self.strict_img_size = strict_img_size
        self.output_fmt = Format(output_fmt) if output_fmt is not None else Format.NCHW
        self.flatten = flatten and output_fmt is None
        layers, width = [], in_chans
        for out in (24, 48, 96):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            width = out
        layers.append(nn.Conv2d(width, embed_dim, 1, bias=bias))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def feat_ratio(self, as_scalar=True):
        return 8 if as_scalar else (8, 8)

    def dynamic_feat_size(self, img_size):
        return img_size[0] // 8, img_size[1] // 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if H % 8 or W % 8:
            raise ValueError(f"input size {H}x{W} is not a multiple of the patch size 8")
        x = self.proj(x)                                   # (B, D, H/8, W/8)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)
        elif self.output_fmt.value == "NHWC":
            x = x.permute(0, 2, 3, 1)
        return self.norm(x)


def _register_embedded_arch() -> None:
    """Register nbseg's small ViTs with timm, so ``timm.create_model(VIT_TINY)`` and
    ``load(VIT_TINY_CONVSTEM, weights=FILE)`` work like any timm name."""
    if timm.models.is_model(VIT_TINY) and timm.models.is_model(VIT_TINY_CONVSTEM):
        return

    def tiny_vit(pretrained: bool, kwargs: dict, **arch) -> VisionTransformer:
        if pretrained:
            raise WeightsError("nbseg's embedded ViTs have no hub weights: use nbseg.backbones.load('embedded')")
        args = dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=6, mlp_ratio=4.0, qkv_bias=True,
                    num_classes=0, **arch)
        args.update({k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                   "cache_dir")})
        return VisionTransformer(**args)

    @register_model
    def nbseg_vit_tiny_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """ViT-Tiny/8 sized for the 96-px embedded world: 192-d, 6 blocks, 6 heads (2.7M parameters)."""
        return tiny_vit(pretrained, kwargs)

    @register_model
    def nbseg_vit_tiny_convstem_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """The same ViT-Tiny/8 with a convolutional patch embedding (:class:`ConvStemPatchEmbed`)."""
        return tiny_vit(pretrained, kwargs, embed_layer=ConvStemPatchEmbed)


_register_embedded_arch()


def create_model(arch: str, **kwargs) -> nn.Module:
    """``timm.create_model`` for a ViT with a dynamic input size and no classifier head."""
    if not timm.models.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0].split('_')[0]}*")[:8]
        raise WeightsError(f"unknown backbone {arch!r}: use a timm ViT name such as "
                           f"'vit_small_patch16_224.dino', or 'embedded'. Similar timm names: {close}")
    kwargs.setdefault("num_classes", 0)
    kwargs.setdefault("dynamic_img_size", True)
    return timm.create_model(arch, **kwargs)

