"""TransFGU's training data: the images with their stored Grad-CAM maps, cropped and flipped per item (Sec. 4.2,
released ``data_augment``); the photometric draw is per batch, in :func:`nbseg.methods.transfgu.model.photometric`.

Per item (seeded by the shared loop's item seed, so a resumed run sees the same crops): a square crop of side
``s * image_size`` with s drawn from {crop_scale_min, +0.1, ..., crop_scale_max} (released: 0.4 ... 0.9) at a
random position, resized (bilinear) to ``train_crop_size`` (released: half the image size), its pseudo-label maps
cropped to the crop's token grid with ``torchvision.ops.roi_align`` (average, ``aligned=True``), and both flipped
horizontally with probability 0.5. With ``augment: false`` (nbseg's sanity fit, not the paper's) the item is the
whole image resized to ``train_crop_size`` with its stored maps unchanged (when their grid is the crop's; roi_align
smooths even the whole-image box by a quarter cell), never flipped.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nbseg.data import load_dataset
from nbseg.data.crops import crop_maps as crop_pseudo_labels   # shared with the embedded backbone's stage 4
from nbseg.methods.transfgu.bank import load_images


def open_split(cfg, split: str | None = None):
    """The dataset ``cfg.data`` / ``split`` (default ``cfg.split``), with the world's label set ``cfg.labels``."""
    extra = {"labels": cfg.labels} if cfg.data == "world" else {}
    return load_dataset(cfg.data, cfg.data_root, split or cfg.split, **extra)


def crop_scales(lo: float, hi: float) -> list[float]:
    """{lo, lo + 0.1, ..., hi} (released: 0.4 ... 0.9)."""
    return [round(v, 4) for v in np.arange(lo, hi + 1e-6, 0.1)] or [lo]


class PseudoLabelCrops(torch.utils.data.Dataset):
    """``dataset[(index, seed)] -> {"index", "image": (3, s, s), "pseudo": (K', g, g)}`` for the shared loop."""

    def __init__(self, dataset, pseudo, cfg, patch_size: int):
        self.dataset, self.pseudo, self.cfg = dataset, pseudo, cfg
        self.grid = cfg.crop_px // patch_size
        self.scales = crop_scales(cfg.crop_scale_min, cfg.crop_scale_max)
        self.name = f"{getattr(dataset, 'name', 'data')}/{getattr(dataset, 'split', '')} (crops + pseudo labels)"

    def __len__(self) -> int:
        return self.pseudo.maps.shape[0]

    def __getitem__(self, item) -> dict:
        index, seed = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), 0)
        gen = torch.Generator().manual_seed(seed)
        size = self.cfg.image_size
        image = load_images(self.dataset, index, index + 1, size)
        augment = self.cfg.augment
        side = int(self.scales[int(torch.randint(len(self.scales), (1,), generator=gen))] * size) if augment else size
        y0, x0 = (int(torch.randint(size - side + 1, (1,), generator=gen)) for _ in range(2))
        crop = F.interpolate(image[:, :, y0:y0 + side, x0:x0 + side], size=(self.cfg.crop_px,) * 2,
                             mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
        box = torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32)
        maps = self.pseudo.tensor(slice(index, index + 1))
        if not augment and maps.shape[-1] == self.grid:   # the stored targets as they are (roi_align would smooth)
            pseudo = maps[0]
        else:
            pseudo = crop_pseudo_labels(maps, box, self.grid, size)[0]
        if augment and torch.rand((), generator=gen) < 0.5:
            crop, pseudo = crop.flip(-1), pseudo.flip(-1)
        return {"index": index, "image": crop, "pseudo": pseudo}


__all__ = ["open_split", "crop_scales", "crop_pseudo_labels", "PseudoLabelCrops"]
