"""The views a pretraining step trains on, and the images they are cut from.

Two ways to make them, by ``augment_on``: ``cpu`` - :class:`DINOViewDataset`, each image's views drawn in DataLoader
workers from a generator seeded by (seed, epoch, image) (:class:`nbseg.data.multicrop.MultiCropAugmentation`);
``device`` - the split preloaded on the training device (:func:`preload_images`) and each batch's views made there
at once (:func:`device_view_batches`, :class:`nbseg.pretrain.batched_augment.BatchedMultiCrop`). Either way a
resumed run draws the same views as an uninterrupted one.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.transforms.v2 import functional as TF

from nbseg.backbones import IMAGENET_MEAN, IMAGENET_STD
from nbseg.data import load_dataset
from nbseg.data.multicrop import MultiCropAugmentation, MultiCropConfig
from nbseg.pretrain.batched_augment import BatchedMultiCrop
from nbseg.pretrain.config import PretrainConfig
from nbseg.train.data import item_seed, seed_of
from nbseg.world import ensure_world

__all__ = ["ViewBatch", "open_images", "DINOViewDataset", "collate_views", "preload_images", "device_view_batches",
           "normalised"]


class ViewBatch(NamedTuple):
    """One step's input: ``views`` the list of (B, 3, s, s) crops in [0, 1] (globals first; None when no view is
    made, MAE alone), ``thetas`` the global crops' (B, 2, 3) maps and ``images`` the (B, 3, S, S) batch they were
    cut from (both only with ``augment_on=device``, else None)."""

    views: list[torch.Tensor] | None
    thetas: torch.Tensor | None
    images: torch.Tensor | None


def normalised(views: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Crops in [0, 1] -> on ``device``, normalised with the ImageNet mean / std the backbones expect."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).to(device)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1).to(device)
    return [(v.to(device, non_blocking=True) - mean) / std for v in views]


def open_images(cfg: PretrainConfig):
    """The image collection a run trains on: a dataset nbseg knows, or a folder of images."""
    if cfg.data == "world" and cfg.data_root is None:
        ensure_world()
    return load_dataset(cfg.data, root=cfg.data_root, split=cfg.split)


class DINOViewDataset(torch.utils.data.Dataset):
    """Item ``(i, seed)`` -> the list of views of image ``i``, drawn from a generator seeded by ``seed`` (the loop
    passes :func:`nbseg.train.data.item_seed` (seed, epoch, i)); a bare ``i`` uses (config seed, ``self.epoch``, i).
    """

    def __init__(self, images, cfg: PretrainConfig):
        self.images = images
        self.cfg = cfg
        self.aug = MultiCropAugmentation(MultiCropConfig(
            global_size=cfg.global_size, local_size=cfg.local_size, n_local=cfg.n_local,
            global_scale=tuple(cfg.global_scale), local_scale=tuple(cfg.local_scale),
            colour_jitter=cfg.colour_jitter, hue=cfg.hue, grayscale_p=cfg.grayscale_p,
            colour_lut_p=cfg.colour_lut_p, colour_lut_size=cfg.colour_lut_size))
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int | tuple[int, int]) -> list[torch.Tensor]:
        i, seed = item if isinstance(item, tuple) else (item, item_seed(self.cfg.seed, self.epoch, item))
        image = self.images[i].image
        short = min(image.shape[-2:])
        if short != self.cfg.image_size:
            image = TF.resize(image, self.cfg.image_size, antialias=True)
        return self.aug(image, torch.Generator().manual_seed(seed))


def collate_views(batch: list[list[torch.Tensor]]) -> ViewBatch:
    """Per-image lists of views -> one ViewBatch of (B, 3, s, s) views (per-image views carry no crop maps)."""
    return ViewBatch([torch.stack(views) for views in zip(*batch)], None, None)


class _SquareImages(torch.utils.data.Dataset):
    """Image ``i`` resized (short side) to ``size`` and centre-cropped to a square, as uint8 (3, size, size)."""

    def __init__(self, images, size: int):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i].image
        if min(image.shape[-2:]) != self.size:
            image = TF.resize(image, self.size, antialias=True)
        image = TF.center_crop(image, [self.size, self.size])
        return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def preload_images(images, size: int, num_workers: int = 0) -> torch.Tensor:
    """The whole split as one (N, 3, size, size) uint8 tensor (for ``augment_on=device``; a non-square image
    keeps its centre square, where the per-image path would crop from the whole rectangle)."""
    loader = torch.utils.data.DataLoader(_SquareImages(images, size), batch_size=64, num_workers=num_workers)
    return torch.cat(list(loader))


def device_view_batches(bank: torch.Tensor, batches, augment: BatchedMultiCrop | None, seed: int, first_step: int,
                        rank: int, recolour_globals: bool = False):
    """The views of each batch of ``(index, item_seed)`` keys, made on ``bank``'s device; the generator of
    step ``first_step + k`` is seeded by (seed, step, rank), so a resumed run draws the same views.

    Yields :class:`ViewBatch` es: the list of views, the two global crops' (B, 2, 3) maps and the batch's images
    (B, 3, S, S) in [0, 1] (for MAE's own view); with ``augment=None``, views and thetas are None."""
    for k, batch in enumerate(batches):
        index = torch.tensor([i for i, _ in batch], device=bank.device)
        images = bank[index].float() / 255
        if augment is None:
            yield ViewBatch(None, None, images)
            continue
        gen = torch.Generator(device=bank.device).manual_seed(seed_of(seed, first_step + k, rank, 17))
        views, thetas = augment(images, gen, recolour_globals, return_thetas=True)
        yield ViewBatch(views, thetas, images)

