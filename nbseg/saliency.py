"""Saliency masks from the last block's CLS attention.

* :func:`keep_mass_mask` - DINO's rule (``visualize_attention.py``): keep the smallest set of highest-attention
  patches that holds a fraction ``t`` of the attention mass (sort ascending, normalise, cumulative sum > 1 - t).
  Note: a fraction of the *mass*, not of the patches.
* :func:`dino_saliency` - that rule per head, or on the head mean.
* :func:`alignseg_saliency` - AlignSeg's released variant (official_implementations.md 3.2): head mean -> Gaussian
  blur (kernel 7, sigma 0.6) on the patch grid -> keep 60% of the mass -> drop connected components of at most 2
  patches (8-connectivity).
* :func:`mean_threshold_saliency` - TransFGU's crop rule: head mean above its mean.
* :func:`mask_iou` - IoU of boolean masks, ignoring pixels marked in ``valid``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def keep_mass_mask(attn: torch.Tensor, fraction: float = 0.6) -> torch.Tensor:
    """Keep the highest values of each map until they hold ``fraction`` of its mass (DINO's threshold).

    Args:
        attn: (..., h, w) non-negative attention maps.
        fraction: t in (0, 1]; the kept set is the smallest set of top patches with mass >= t (ties broken by
            sort order, as in DINO).
    Returns:
        (..., h, w) bool mask.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    shape = attn.shape
    flat = attn.reshape(-1, shape[-2] * shape[-1]).float()
    values, order = torch.sort(flat, dim=-1)                       # ascending, as DINO
    mass = values / values.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    keep_sorted = torch.cumsum(mass, dim=-1) > (1 - fraction)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(-1, order, keep_sorted)                          # un-sort
    return keep.reshape(shape)


def dino_saliency(attn: torch.Tensor, fraction: float = 0.6, head: str | int = "mean") -> torch.Tensor:
    """DINO keep-the-mass masks.

    Args:
        attn: (B, heads, h, w) CLS->patch attention.
        head: ``"mean"`` (the head mean, (B, h, w) out), ``"each"`` (per head, (B, heads, h, w) out) or a head index.
    """
    if head == "mean":
        return keep_mass_mask(attn.mean(dim=1), fraction)
    if head == "each":
        return keep_mass_mask(attn, fraction)
    return keep_mass_mask(attn[:, int(head)], fraction)


def gaussian_kernel2d(kernel_size: int, sigma: float, device=None) -> torch.Tensor:
    """(k, k) normalised Gaussian, as torchvision's GaussianBlur builds it."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def gaussian_blur_maps(maps: torch.Tensor, sigma: float = 0.6, kernel_size: int = 7) -> torch.Tensor:
    """Blur (B, h, w) maps with reflect padding (torchvision's GaussianBlur default)."""
    k = gaussian_kernel2d(kernel_size, sigma, maps.device).to(maps.dtype)
    pad = kernel_size // 2
    x = maps[:, None]
    # reflect padding needs pad < size; tiny grids fall back to replicate.
    mode = "reflect" if min(maps.shape[-2:]) > pad else "replicate"
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(x, k[None, None])[:, 0]


def remove_small_components(mask: torch.Tensor, max_size: int = 2) -> torch.Tensor:
    """Drop 8-connected components of at most ``max_size`` patches from (B, h, w) bool masks."""
    out = mask.detach().cpu().numpy().copy()
    structure = np.ones((3, 3), dtype=bool)                        # full connectivity, as skimage's default
    for b in range(out.shape[0]):
        labels, n = ndimage.label(out[b], structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        small = np.flatnonzero(sizes <= max_size)
        small = small[small != 0]
        out[b][np.isin(labels, small)] = False
    return torch.from_numpy(out).to(mask.device)


def alignseg_saliency(attn: torch.Tensor, fraction: float = 0.6, sigma: float = 0.6, kernel_size: int = 7,
                      min_component: int = 2) -> torch.Tensor:
    """AlignSeg's foreground hint: head mean -> blur -> keep ``fraction`` of the mass -> drop small components.

    Args:
        attn: (B, heads, h, w) CLS->patch attention.
    Returns:
        (B, h, w) bool mask.
    """
    blurred = gaussian_blur_maps(attn.mean(dim=1).float(), sigma, kernel_size)
    return remove_small_components(keep_mass_mask(blurred, fraction), min_component)


def mean_threshold_saliency(attn: torch.Tensor) -> torch.Tensor:
    """TransFGU's crop foreground: head-mean attention above its spatial mean. (B, heads, h, w) -> (B, h, w)."""
    m = attn.mean(dim=1)
    return m > m.mean(dim=(-2, -1), keepdim=True)


def saliency(attn: torch.Tensor, method: str = "dino", fraction: float = 0.6) -> torch.Tensor:
    """One entry point: ``method`` in {"dino" (head mean), "alignseg", "mean"}. (B, heads, h, w) -> (B, h, w)."""
    if method == "dino":
        return dino_saliency(attn, fraction)
    if method == "alignseg":
        return alignseg_saliency(attn, fraction)
    if method == "mean":
        return mean_threshold_saliency(attn)
    raise ValueError(f"unknown saliency method {method!r}: use 'dino', 'alignseg' or 'mean'")


def upsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling of (B, h, w) bool masks to (B, H, W)."""
    return F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


def mask_iou(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image IoU of boolean masks (B, H, W), counting only ``valid`` pixels. Empty union -> 1.0."""
    if valid is None:
        valid = torch.ones_like(gt, dtype=torch.bool)
    pred, gt = pred & valid, gt & valid
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
