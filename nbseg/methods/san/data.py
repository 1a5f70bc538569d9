"""SAN's data, the IIC-style protocol the paper follows (docs/official_implementations.md Sec. 4): images prescaled
(COCO: x 0.33), random ``crop_size`` crops (128 in the paper) with horizontal flips and, on Potsdam, colour jitter for
training; prescale then a centre crop for evaluation. On the world (96 px images, ``crop_size`` 96) a crop is the
whole image. Every random choice of an item is drawn from the item's seed (exact resume, any ``num_workers``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nbseg.data import load_dataset


def open_split(cfg, split: str | None = None, labels: str | None = None):
    """The dataset ``cfg.data`` / ``split`` (default ``cfg.split``); on the world with label set ``labels``
    (default ``cfg.labels``)."""
    extra = {"labels": labels or cfg.labels} if cfg.data == "world" else {}
    return load_dataset(cfg.data, cfg.data_root, split or cfg.split, **extra)


def prescale(image: torch.Tensor, factor: float, label: torch.Tensor | None = None):
    """Resize (3, H, W) by ``factor`` (bilinear, antialiased; the label (H, W) nearest). Returns (image, label)."""
    if factor == 1.0:
        return image, label
    size = (max(1, round(image.shape[-2] * factor)), max(1, round(image.shape[-1] * factor)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, label


def _fit_to_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Images smaller than a crop are enlarged (short side = size) so a crop fits."""
    short = min(image.shape[-2:])
    return image if short >= size else prescale(image, size / short)[0]


def random_view(image: torch.Tensor, cfg, generator: torch.Generator) -> torch.Tensor:
    """A training view of (3, H, W) in [0, 1]: prescale, random crop of ``crop_size``, flip, colour jitter."""
    image = _fit_to_crop(prescale(image, cfg.prescale)[0], cfg.crop_size)
    H, W = image.shape[-2:]
    top = int(torch.randint(0, H - cfg.crop_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, W - cfg.crop_size + 1, (1,), generator=generator))
    image = image[:, top:top + cfg.crop_size, left:left + cfg.crop_size]
    if cfg.hflip and torch.rand((), generator=generator) < 0.5:
        image = image.flip(-1)
    if cfg.colour_jitter > 0:               # brightness, contrast, saturation factors in [1 - j, 1 + j]
        b, c, s = (1 + cfg.colour_jitter * (2 * torch.rand(3, generator=generator) - 1)).tolist()
        image = image * b
        mean = image.mean()
        image = (image - mean) * c + mean
        grey = image.mean(0, keepdim=True)
        image = (image - grey) * s + grey
    return image.clamp(0, 1).contiguous()


def eval_view(image: torch.Tensor, label: torch.Tensor | None, cfg):
    """The evaluation view: prescale, then a centre crop of ``crop_size`` when the image is larger (IIC's test
    protocol); the world's 96-px images are kept whole. Returns (image, label)."""
    image, label = prescale(image, cfg.prescale, label)
    H, W = image.shape[-2:]
    if cfg.data == "world" or (H <= cfg.crop_size and W <= cfg.crop_size):
        return image, label
    top, left = max(0, (H - cfg.crop_size) // 2), max(0, (W - cfg.crop_size) // 2)
    crop = (slice(top, top + cfg.crop_size), slice(left, left + cfg.crop_size))
    return image[:, crop[0], crop[1]], None if label is None else label[crop[0], crop[1]]


class SANTrainingSet(torch.utils.data.Dataset):
    """``dataset[(index, seed)] -> {"index", "image": (3, crop, crop)}`` over the first ``cfg.limit`` images."""

    def __init__(self, cfg, dataset=None):
        self.cfg, self.dataset = cfg, dataset if dataset is not None else open_split(cfg)
        self.name = getattr(self.dataset, "name", cfg.data)
        self.n = len(self.dataset) if cfg.limit is None else min(cfg.limit, len(self.dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        index, seed = item
        generator = torch.Generator().manual_seed(int(seed))
        return {"index": index, "image": random_view(self.dataset[index].image, self.cfg, generator)}


def training_dataset(cfg, model=None, progress: bool = True) -> SANTrainingSet:
    """The spec's training dataset (the model and progress are not needed: SAN reads images directly)."""
    return SANTrainingSet(cfg)


__all__ = ["open_split", "prescale", "random_view", "eval_view", "SANTrainingSet", "training_dataset"]
