"""Pixel-level k-means baselines for methods that learn from raw pixels (no pretrained model), e.g. SAN: one k-means
of per-pixel features over a split (fitted on a seeded sample of pixels, then every pixel assigned), K clusters.

* raw-RGB k-means: the features are the pixels' colours;
* random-CNN k-means: the features come from a randomly initialised network (the caller passes it, e.g. a method's
  own encoder at initialisation), which shows what training adds to the architecture alone.

Euclidean metric (colours and untrained features have meaningful magnitudes).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from nbseg.cluster import assign, kmeans


def _per_pixel(features: torch.Tensor) -> torch.Tensor:
    """(D, H, W) -> (H * W, D)."""
    return features.flatten(1).T


def pixel_kmeans(images: Sequence[torch.Tensor], k: int, feature_fn: Callable[[torch.Tensor], torch.Tensor] | None
                 = None, *, seed: int = 0, sample: int = 20000, batch_size: int = 16) -> list[torch.Tensor]:
    """Dataset-level k-means of per-pixel features.

    images: (3, H, W) tensors in [0, 1] (sizes may differ); feature_fn: a batch (B, 3, H, W) -> (B, D, H, W)
    (None: the RGB values). ``sample`` pixels drawn uniformly over the split (seeded) fit the centroids (k-means++,
    3 restarts); every pixel is then assigned. Returns one (H, W) int64 cluster map per image."""
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, sample // max(1, len(images)))
    feats, fit = [], []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size])
        same = len({tuple(im.shape) for im in chunk}) == 1
        groups = [torch.stack(chunk)] if same else [im[None] for im in chunk]
        for group in groups:
            with torch.no_grad():
                out = group if feature_fn is None else feature_fn(group)
            for f in out.float():
                pixels = _per_pixel(f)
                idx = torch.randint(0, pixels.shape[0], (min(per_image, pixels.shape[0]),), generator=generator)
                fit.append(pixels[idx])
                feats.append(f)
    _, centroids, _ = kmeans(torch.cat(fit), k, metric="euclidean", seed=seed)
    return [assign(_per_pixel(f), centroids, metric="euclidean").reshape(f.shape[-2:]) for f in feats]


__all__ = ["pixel_kmeans"]
