"""DINO's multi-crop augmentation for a whole batch at once, on the device that holds the images.

Why: the per-image augmentation in :mod:`nbseg.pretrain.dino` (torchvision functions, one generator per image)
costs ~18 ms per image on one CPU core. A tiny ViT on a GPU takes a few milliseconds per step, so with that path a
GPU run waits on its data loaders. Here every random choice of a batch is drawn at once from one generator and
every operation is a batched tensor op, so a step's views cost about as much as its forward pass.

The operations and their probabilities are DINO's (as in :class:`~nbseg.pretrain.dino.MultiCropAugmentation`):
random resized crop + horizontal flip, colour jitter (brightness, contrast, saturation, hue; p = 0.8), grayscale,
Gaussian blur (p = 1.0 / 0.1 / 0.5 for global 1 / global 2 / local views), solarisation (p = 0.2, global 2).
Two documented differences from the per-image path:

* the order of the four colour-jitter operations is drawn once per batch and view, not per image;
* a crop box whose drawn aspect does not fit the image is clamped to it (torchvision retries 10 times, then
  falls back to a centre crop); crops are resampled bilinearly without antialiasing (``grid_sample``).

Determinism: the views are a pure function of the images and the generator's seed, which the loop takes from
(seed, step), so a resumed run on the same device draws the same views.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nbseg.data.multicrop import MultiCropConfig

__all__ = ["BatchedMultiCrop", "random_crop_thetas", "random_crop_grids", "rgb_to_hsv", "hsv_to_rgb", "colour_jitter_",
           "gaussian_blur_per_sample", "grayscale", "corresponding_positions", "random_colour_lut"]

_LUMA = (0.299, 0.587, 0.114)            # ITU-R 601 weights, as torchvision's rgb_to_grayscale


def _rand(n: int, gen: torch.Generator, device, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def random_crop_thetas(batch: int, scale: tuple[float, float], gen: torch.Generator, device,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5) -> torch.Tensor:
    """Affine maps (B, 2, 3) of random resized crops (with random horizontal flips): a point ``x`` of the crop,
    in normalised coordinates [-1, 1], lies at ``theta[:, :, :2] x + theta[:, :, 2]`` in the image.

    Each crop covers a fraction ``a ~ U(scale)`` of the image area with aspect ``r`` log-uniform in ``ratio``:
    width ``sqrt(a r)``, height ``sqrt(a / r)`` in units of the image side, clamped to 1, at a uniform position.
    """
    area = _rand(batch, gen, device, *scale)
    log_r = _rand(batch, gen, device, math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * log_r.exp()).clamp(max=1.0)
    h = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
    cx = (_rand(batch, gen, device) * (1 - w) + w / 2) * 2 - 1          # centre in [-1, 1]
    cy = (_rand(batch, gen, device) * (1 - h) + h / 2) * 2 - 1
    flip = torch.where(_rand(batch, gen, device) < flip_p, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return theta


def random_crop_grids(batch: int, out_size: int, scale: tuple[float, float], gen: torch.Generator, device,
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5) -> torch.Tensor:
    """Sampling grids (B, out_size, out_size, 2) of :func:`random_crop_thetas` crops for ``F.grid_sample``
    (normalised coordinates, ``align_corners=False``)."""
    theta = random_crop_thetas(batch, scale, gen, device, ratio, flip_p)
    return F.affine_grid(theta, [batch, 3, out_size, out_size], align_corners=False)


def corresponding_positions(theta_from: torch.Tensor, theta_to: torch.Tensor, grid: tuple[int, int]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the token centres of one crop lie in another crop of the same image.

    Token ``(i, j)`` of an ``h x w`` grid has its centre at ``x = ((2 j + 1) / w - 1, (2 i + 1) / h - 1)`` in the
    crop ``from``; in the image that is ``s = A_from x + t_from`` and in the crop ``to`` it is
    ``A_to^{-1} (s - t_to)`` (``theta = [A | t]``, as :func:`random_crop_thetas`).

    Args:
        theta_from, theta_to: (B, 2, 3) crop maps of the same images.
        grid: (h, w) token grid of crop ``from``.
    Returns:
        positions (B, h, w, 2) in ``to``'s normalised (x, y) coordinates, ready for ``F.grid_sample``, and
        inside (B, h, w) bool: the centre lies within crop ``to``.
    """
    h, w = grid
    dev, dtype = theta_from.device, theta_from.dtype
    ys = (2 * torch.arange(h, device=dev, dtype=dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, device=dev, dtype=dtype) + 1) / w - 1
    centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).view(1, h * w, 2)     # (1, N, (x, y))
    in_image = centres @ theta_from[:, :, :2].transpose(1, 2) + theta_from[:, None, :, 2]        # (B, N, 2)
    inv_a = torch.linalg.inv(theta_to[:, :, :2])
    in_to = (in_image - theta_to[:, None, :, 2]) @ inv_a.transpose(1, 2)
    inside = (in_to.abs() <= 1).all(dim=-1)
    return in_to.view(-1, h, w, 2), inside.view(-1, h, w)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma ``0.299 R + 0.587 G + 0.114 B``."""
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the colour circle)."""
    r, g, b = x.unbind(1)
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6,
                      torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue % 1.0, sat, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: (B, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = x.unbind(1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)      # n = 5, 3, 1 for R, G, B
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def colour_jitter_(x: torch.Tensor, apply: torch.Tensor, strength: float, hue: float, gen: torch.Generator
                   ) -> torch.Tensor:
    """DINO's ColorJitter(b=c=s=strength, hue) on the images where ``apply`` (B,) is true; returns the result.

    brightness ``x f``; contrast ``(x - mean(gray)) f + mean(gray)``; saturation ``gray + (x - gray) f``;
    hue: ``h + d`` (mod 1) in HSV; ``f ~ U(1 - strength, 1 + strength)``, ``d ~ U(-hue, hue)``, in a random order.
    """
    B, dev = x.shape[0], x.device
    factors = [_rand(B, gen, dev, 1 - strength, 1 + strength).view(B, 1, 1, 1) for _ in range(3)]
    shift = _rand(B, gen, dev, -hue, hue).view(B, 1, 1)
    order = torch.randperm(4, generator=gen, device=dev).tolist()
    out = x
    for op in order:
        if op == 0:
            out = out * factors[0]
        elif op == 1:
            mean = grayscale(out).mean(dim=(2, 3), keepdim=True)
            out = (out - mean) * factors[1] + mean
        elif op == 2:
            gray = grayscale(out)
            out = gray + (out - gray) * factors[2]
        elif hue > 0:
            hsv = rgb_to_hsv(out.clamp(0, 1))
            hsv = torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], dim=1)
            out = hsv_to_rgb(hsv)
        out = out.clamp(0, 1)
    return torch.where(apply.view(B, 1, 1, 1), out, x)


def random_colour_lut(x: torch.Tensor, apply: torch.Tensor, lut_size: int, gen: torch.Generator) -> torch.Tensor:
    """Recolour each image where ``apply`` (B,) is true by its own random smooth colour map ``f: [0,1]^3 -> [0,1]^3``:
    a ``lut_size^3`` look-up table of uniform random colours, read by trilinear interpolation (nbseg's
    augmentation for worlds whose colours carry no class, like the embedded one; not in DINO).

    Unlike colour jitter, which moves every colour of an image the same way, colours more than a lattice cell apart
    are mapped independently, so two views of one region share its pattern but not its colours.
    (B, 3, H, W) in [0, 1] -> same shape.
    """
    B, dev = x.shape[0], x.device
    lut = torch.rand(B, 3, lut_size, lut_size, lut_size, generator=gen, device=dev, dtype=x.dtype)
    # grid_sample's 3-D grid reads (x, y, z) as (W, H, D) of the table: index the table by (R, G, B) -> (D, H, W)
    coords = x.permute(0, 2, 3, 1).flip(-1).unsqueeze(1) * 2 - 1                 # (B, 1, H, W, 3) as (b, g, r)
    out = F.grid_sample(lut, coords.clamp(-1, 1), mode="bilinear", padding_mode="border", align_corners=True)
    return torch.where(apply.view(B, 1, 1, 1), out[:, :, 0], x)


def gaussian_blur_per_sample(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per image (B,); ``sigma <= 0`` leaves the image unchanged.

    The kernel radius is ``ceil(3 max(sigma))`` for the whole batch, with reflect padding."""
    B, C, H, W = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max().clamp(min=0)))))
    radius = min(radius, min(H, W) - 1)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).view(B, 1)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (offsets == 0).to(x.dtype).expand(B, -1)
    kernel = torch.where((sigma > 0).view(B, 1), kernel, identity)           # (B, 2r + 1)
    k = kernel.repeat_interleave(C, dim=0)                                  # one kernel per (image, channel)
    y = F.pad(x.reshape(1, B * C, H, W), (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)
    return y.view(B, C, H, W)


class BatchedMultiCrop:
    """``__call__(images (B, 3, H, W) in [0, 1], gen)`` -> [2 global views, n_local local views], each
    (B, 3, s, s) in [0, 1] on the images' device; the batched twin of ``MultiCropAugmentation``."""

    def __init__(self, cfg: MultiCropConfig):
        self.cfg = cfg

    def _photometric(self, x: torch.Tensor, blur_p: float, solarize_p: float, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        B, dev, size = x.shape[0], x.device, x.shape[-1]
        if cfg.colour_lut_p > 0:             # drawn only when asked, so other runs keep their random streams
            x = random_colour_lut(x, _rand(B, gen, dev) < cfg.colour_lut_p, cfg.colour_lut_size, gen)
        x = colour_jitter_(x, _rand(B, gen, dev) < 0.8, cfg.colour_jitter, cfg.hue, gen)
        gray = (_rand(B, gen, dev) < cfg.grayscale_p).view(B, 1, 1, 1)
        x = torch.where(gray, grayscale(x).expand_as(x), x)
        # DINO's sigma range (0.1, 2.0) at 224 px, scaled to the crop size like the per-image path.
        sigma = _rand(B, gen, dev, 0.1, 2.0) * size / 224 * 2
        x = gaussian_blur_per_sample(x, torch.where(_rand(B, gen, dev) < blur_p, sigma, torch.zeros_like(sigma)))
        solar = (_rand(B, gen, dev) < solarize_p).view(B, 1, 1, 1)
        x = torch.where(solar & (x >= 0.5), 1 - x, x)
        return x.clamp(0, 1)

    def __call__(self, images: torch.Tensor, gen: torch.Generator, recolour_globals: bool = False,
                 return_thetas: bool = False):
        """Views: 2 global, ``n_local`` local and, with ``recolour_globals``, 2 more: the same two global crops
        with a new photometric draw (for a teacher whose targets must not depend on the student's colours).
        With ``return_thetas`` also the two global crops' (B, 2, 3) maps (:func:`random_crop_thetas`)."""
        cfg = self.cfg
        B, dev = images.shape[0], images.device
        thetas = [random_crop_thetas(B, cfg.global_scale, gen, dev) for _ in range(2)]
        crops = [F.grid_sample(images, F.affine_grid(t, [B, 3, cfg.global_size, cfg.global_size], align_corners=False),
                               mode="bilinear", padding_mode="border", align_corners=False) for t in thetas]
        probs = [(1.0, 0.0), (0.1, 0.2)]
        views = [self._photometric(c, *p, gen) for c, p in zip(crops, probs)]
        for _ in range(cfg.n_local):
            crop = F.grid_sample(images, random_crop_grids(B, cfg.local_size, cfg.local_scale, gen, dev),
                                 mode="bilinear", padding_mode="border", align_corners=False)
            views.append(self._photometric(crop, 0.5, 0.0, gen))
        if recolour_globals:
            views += [self._photometric(c, *p, gen) for c, p in zip(crops, probs)]
        return (views, thetas) if return_thetas else views
