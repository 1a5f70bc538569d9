"""Cropping per-patch maps along with the image crop they belong to (one computation, used by every method that
trains a student on crops against maps of the whole image: TransFGU's pseudo labels, the teacher targets of the
embedded backbone's stage 4)."""
from __future__ import annotations

import torch


def crop_maps(maps: torch.Tensor, boxes: torch.Tensor, grid: int, image_size: int) -> torch.Tensor:
    """RoI-align the crops ``boxes`` (B, 4) ``(x0, y0, x1, y1)`` in image pixels out of maps (B, K, h, w) covering
    the ``image_size`` image: -> (B, K, grid, grid) (average pooling, ``aligned=True``: a box's edges are pixel
    edges; each output cell averages 2 x 2 bilinear samples, so even the whole-image box smooths the maps by a
    quarter cell)."""
    from torchvision.ops import roi_align

    scale = maps.shape[-1] / image_size
    rois = torch.cat([torch.arange(len(boxes), dtype=maps.dtype)[:, None], boxes.to(maps.dtype)], 1)
    return roi_align(maps, rois, output_size=(grid, grid), spatial_scale=scale, sampling_ratio=2, aligned=True)


__all__ = ["crop_maps"]
