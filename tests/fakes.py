"""A constructed world and backbone where every probe's right answer is known.

Images are 32 x 32, drawn in three pure colours on a 4-px patch grid: red background (class 0), green squares
(class 1), blue squares (class 2). The "backbone" embeds a patch as its mean colour and attends to the non-red share
of it, so colour = class = embedding direction, and the attention is exactly the foreground.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbseg.backbones import Features
from nbseg.probes import FeatureSet

PATCH = 4
SIZE = 32
CLASS_NAMES = ["background", "green", "blue"]
# (class, top, left, side) in pixels, all on the patch grid; images 0 and 1 show one class each (the sources).
SCENES = [
    [(1, 4, 4, 20)],
    [(2, 4, 12, 16)],
    [(1, 0, 0, 12), (2, 16, 16, 12)],
    [(1, 20, 4, 8), (2, 4, 20, 8)],
    [(2, 8, 0, 8), (1, 12, 16, 16)],
    [(1, 16, 8, 12), (2, 0, 4, 12)],
]


class ColourBackbone:
    """Patch embedding = mean colour of the patch (3-d); CLS attention (2 heads) = non-red share + 1e-3."""

    name = "colour"
    patch_size = PATCH
    random_init = False

    def describe(self) -> str:
        return "colour backbone (constructed)"

    def extract(self, images: torch.Tensor) -> Features:
        pooled = F.avg_pool2d(images.float(), PATCH)                        # (B, 3, h, w)
        attn = (1.0 - pooled[:, 0]).clamp_min(0) + 1e-3
        return Features(patches=pooled.permute(0, 2, 3, 1).contiguous(), cls=pooled.mean((2, 3)),
                        attn=torch.stack([attn, attn * 0.5 + 1e-3], dim=1))


def colour_world(scenes=SCENES) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) and labels (N, 32, 32) of ``scenes``."""
    labels = torch.zeros(len(scenes), SIZE, SIZE, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for cls, top, left, side in scene:
            labels[i, top:top + side, left:left + side] = cls
    images = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()               # class c -> colour channel c
    return images, labels


def colour_features(scenes=SCENES) -> FeatureSet:
    images, labels = colour_world(scenes)
    out = ColourBackbone().extract(images)
    return FeatureSet(patches=out.patches, cls=out.cls, attn=out.attn, images=images, labels=labels,
                      ids=[f"img{i}" for i in range(len(scenes))], backbone="colour backbone (constructed)",
                      dataset="colour world")
