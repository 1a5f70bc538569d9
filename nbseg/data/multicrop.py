"""Multi-crop views, the one implementation: the crop-box sampler (:func:`random_resized_crop_box`, torchvision's
RandomResizedCrop rule from an explicit generator) and the two ways nbseg draws views with it.

* DINO's views (:class:`MultiCropAugmentation`, :class:`MultiCropConfig`; pretraining the embedded backbone): 2 global
  + N local crops with DINO's photometric augmentations, drawn from an explicit ``torch.Generator`` so the views of
  sample ``i`` at epoch ``e`` depend only on (seed, e, i), which makes a resumed run identical to an uninterrupted
  one. (:mod:`nbseg.pretrain.batched_augment` is its batched on-device twin, for GPU pretraining.)
* AlignSeg's views (:class:`MultiCropSpec`, :func:`multicrop`, :class:`MultiCropDataset`): one global crop and
  ``n_local`` local crops that must overlap it.

AlignSeg's rule (AlignSeg Sec. IV-B; released ``TrainTransforms``, docs/official_implementations.md Sec. 3.4):

* every crop is a RandomResizedCrop box (torchvision's area / log-aspect rule, aspect (3/4, 4/3)), resized
  bilinearly with antialiasing to its output size; global scale (0.5, 1.0), local scale (0.05, 0.25);
* **minimum intersection**: a local box is redrawn until its intersection with the global box is *more than*
  ``min_intersection`` (0.05) times the area of the original image;
* no photometric augmentation and no flip (``augment_image: False`` in the released configs).

Choices of ours, stated:

* Sizes. The paper crops 224 / 224 px (global / local) from VOC images of ~500 px. The world's images are 96 px, so
  the world defaults are 64 / 64: both crops give the embedded ViT/8 an 8x8 token grid, and a local box of 5-25% of
  a 96-px image (21-48 px) is upsampled to 64 px, about the 2-4x zoom the paper's local crops get on VOC.
* The released code redraws forever. We redraw at most ``max_tries`` (100) times; then the last local box's size is
  centred on the global box's centre (clamped inside the image), which satisfies the rule whenever a box of that
  size can; if it still cannot, that box is used anyway (documented, and counted in ``fallbacks``).
* Boxes are returned in original-image pixels as (top, left, height, width), so the region two crops share can be
  mapped onto either crop's token grid. Neither AlignSeg variant uses it for its losses (the released code moves the
  boxes to the GPU and never reads them; the paper's Eq. 9 mask is saliency-only); they are there for analysis
  and visualisation.
* Randomness comes only from the integer ``seed`` given with each item: ``dataset[(index, seed)]``. The training
  loop derives the seed from (run seed, epoch, index), so a resumed run sees the same crops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from nbseg.data.base import SegDataset
from nbseg.errors import DataError

@dataclass
class MultiCropConfig:
    """Crop sizes scale with the data: DINO uses 224 / 96 px on ImageNet; the 96-px world uses 64 / 32."""

    global_size: int = 64
    local_size: int = 32
    n_local: int = 4
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.25)
    colour_jitter: float = 0.4       # brightness / contrast / saturation strength, applied with p=0.8
    hue: float = 0.1                 # max hue shift (a fraction of the colour circle; 0.5 = any hue)
    grayscale_p: float = 0.2
    colour_lut_p: float = 0.0        # random smooth colour map per view (batched path only; nbseg's, for the world)
    colour_lut_size: int = 4


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], gen: torch.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering ``scale`` of the area with log-uniform aspect ``ratio``
    (torchvision's RandomResizedCrop rule, sampled from ``gen``)."""
    area = height * width
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    side = min(height, width)                   # fallback: centre crop
    return (height - side) // 2, (width - side) // 2, side, side


class MultiCropAugmentation:
    """DINO's augmentation: 2 global views (blur p=1.0 / p=0.1, solarise p=0.2 on the second) and ``n_local``
    local views (blur p=0.5), each with flip, colour jitter (p=0.8) and grayscale (p=0.2).

    ``__call__(image (3, H, W) float in [0, 1], gen)`` returns a list of views in [0, 1]: globals first.
    """

    def __init__(self, cfg: MultiCropConfig):
        self.cfg = cfg

    def _photometric(self, x: torch.Tensor, gen: torch.Generator, blur_p: float, solarize_p: float) -> torch.Tensor:
        cfg = self.cfg
        if torch.rand((), generator=gen) < 0.5:
            x = TF.horizontal_flip(x)
        if torch.rand((), generator=gen) < 0.8:
            s = cfg.colour_jitter
            order = torch.randperm(4, generator=gen).tolist()
            factors = [_uniform(gen, 1 - s, 1 + s), _uniform(gen, 1 - s, 1 + s), _uniform(gen, 1 - s, 1 + s),
                       _uniform(gen, -cfg.hue, cfg.hue)]
            for op in order:
                if op == 0:
                    x = TF.adjust_brightness(x, factors[0])
                elif op == 1:
                    x = TF.adjust_contrast(x, factors[1])
                elif op == 2:
                    x = TF.adjust_saturation(x, factors[2])
                else:
                    x = TF.adjust_hue(x, factors[3])
        if torch.rand((), generator=gen) < cfg.grayscale_p:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if torch.rand((), generator=gen) < blur_p:
            sigma = _uniform(gen, 0.1, 2.0) * x.shape[-1] / 224 * 2   # DINO's sigma range, scaled to the crop size
            kernel = max(3, int(2 * math.ceil(3 * sigma) + 1))
            x = TF.gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
        if torch.rand((), generator=gen) < solarize_p:
            x = TF.solarize(x, threshold=0.5)
        return x.clamp(0, 1)

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        cfg = self.cfg
        H, W = image.shape[-2:]
        views = []
        for i, (blur_p, sol_p) in enumerate(((1.0, 0.0), (0.1, 0.2))):
            t, l, h, w = random_resized_crop_box(H, W, cfg.global_scale, gen)
            crop = TF.resized_crop(image, t, l, h, w, [cfg.global_size, cfg.global_size], antialias=True)
            views.append(self._photometric(crop, gen, blur_p, sol_p))
        for _ in range(cfg.n_local):
            t, l, h, w = random_resized_crop_box(H, W, cfg.local_scale, gen)
            crop = TF.resized_crop(image, t, l, h, w, [cfg.local_size, cfg.local_size], antialias=True)
            views.append(self._photometric(crop, gen, 0.5, 0.0))
        return views


Box = tuple[int, int, int, int]          # (top, left, height, width) in original-image pixels


@dataclass(frozen=True)
class MultiCropSpec:
    """Sizes and scales of the crops. Defaults are the world's (96-px images); AlignSeg on VOC: 224 / 224."""

    global_size: int = 64                # output side of the global view
    global_scale: tuple[float, float] = (0.5, 1.0)
    local_size: int = 64                 # output side of each local view
    local_scale: tuple[float, float] = (0.05, 0.25)
    n_local: int = 2                     # v_l
    min_intersection: float = 0.05       # fraction of the original image area
    max_tries: int = 100

    def __post_init__(self):
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if self.n_local < 1:
            raise ValueError(f"n_local must be at least 1 (AlignSeg aligns the global crop with local crops), "
                             f"got {self.n_local}")
        if not 0 <= self.min_intersection < 1:
            raise ValueError(f"min_intersection is a fraction of the image area in [0, 1), got "
                             f"{self.min_intersection}")


def box_intersection_area(a: Box, b: Box) -> int:
    """Pixel area shared by two (top, left, height, width) boxes."""
    h = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    w = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(h, 0) * max(w, 0)


def _centred_on(box: Box, height: int, width: int, size: tuple[int, int]) -> Box:
    """A (size) box centred on ``box``'s centre, shifted to lie inside the (height, width) image."""
    h, w = size
    top = min(max(box[0] + box[2] // 2 - h // 2, 0), height - h)
    left = min(max(box[1] + box[3] // 2 - w // 2, 0), width - w)
    return top, left, h, w


def sample_multicrop_boxes(height: int, width: int, spec: MultiCropSpec, gen: torch.Generator
                           ) -> tuple[Box, list[Box], int]:
    """The global box and ``spec.n_local`` local boxes obeying the minimum-intersection rule.

    Returns:
        (global_box, local_boxes, fallbacks): ``fallbacks`` counts local boxes placed by the centred fallback after
        ``max_tries`` rejected draws.
    """
    global_box = random_resized_crop_box(height, width, spec.global_scale, gen)
    need = spec.min_intersection * height * width
    local_boxes, fallbacks = [], 0
    for _ in range(spec.n_local):
        for _ in range(spec.max_tries):
            box = random_resized_crop_box(height, width, spec.local_scale, gen)
            if box_intersection_area(box, global_box) > need:
                break
        else:
            box = _centred_on(global_box, height, width, box[2:])
            fallbacks += 1
        local_boxes.append(box)
    return global_box, local_boxes, fallbacks


@dataclass
class MultiCropViews:
    """One image's views: ``global_crop`` (3, G, G), ``local_crops`` (V, 3, L, L) in [0, 1], ``global_box`` (4,)
    and ``local_boxes`` (V, 4) int64 (top, left, height, width) in original pixels, ``image_size`` (2,) (H, W)."""

    global_crop: torch.Tensor
    local_crops: torch.Tensor
    global_box: torch.Tensor
    local_boxes: torch.Tensor
    image_size: torch.Tensor
    id: str = ""
    index: int = -1                      # position in the dataset and the item seed the views were drawn from
    seed: int = -1


def multicrop(image: torch.Tensor, spec: MultiCropSpec, seed: int, id: str = "") -> MultiCropViews:
    """Crop ``image`` (3, H, W) in [0, 1] into AlignSeg's views, every random draw from ``seed`` alone."""
    gen = torch.Generator().manual_seed(int(seed))
    H, W = image.shape[-2:]
    global_box, local_boxes, _ = sample_multicrop_boxes(H, W, spec, gen)

    def crop(box: Box, size: int) -> torch.Tensor:
        return TF.resized_crop(image, *box, [size, size], antialias=True).clamp(0, 1)

    return MultiCropViews(
        global_crop=crop(global_box, spec.global_size),
        local_crops=torch.stack([crop(b, spec.local_size) for b in local_boxes]),
        global_box=torch.tensor(global_box, dtype=torch.long),
        local_boxes=torch.tensor(local_boxes, dtype=torch.long),
        image_size=torch.tensor([H, W], dtype=torch.long), id=id)


class MultiCropDataset(Dataset):
    """AlignSeg training views of a :class:`~nbseg.data.base.SegDataset`.

    ``dataset[(index, seed)]`` -> :class:`MultiCropViews` of image ``index``, drawn from ``seed`` only (labels are
    not used: training is unsupervised). A plain integer index is an error, so a crop never depends on hidden state.
    ``limit`` keeps only the first ``limit`` images (smoke runs, small benchmarks).
    """

    def __init__(self, dataset: SegDataset, spec: MultiCropSpec | None = None, limit: int | None = None):
        if limit is not None and limit < 1:
            raise DataError(f"MultiCropDataset limit must be at least 1 image (or None for all), got {limit}")
        self.dataset = dataset
        self.spec = spec or MultiCropSpec()
        self.limit = limit
        self.name = getattr(dataset, "name", type(dataset).__name__)

    def __len__(self) -> int:
        return len(self.dataset) if self.limit is None else min(self.limit, len(self.dataset))

    def describe(self) -> str:
        """The underlying dataset's description, with the image limit when one is set."""
        text = self.dataset.describe() if hasattr(self.dataset, "describe") else self.name
        return text if self.limit is None or self.limit >= len(self.dataset) else f"{text}, first {len(self)} used"

    def __getitem__(self, key: tuple[int, int]) -> MultiCropViews:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise DataError(f"MultiCropDataset items are indexed by (index, seed), got {key!r}. Fix: pass "
                            f"dataset[(i, seed)] with a seed derived from (run seed, epoch, i).")
        index, seed = key
        if not 0 <= int(index) < len(self):
            raise DataError(f"MultiCropDataset index {index} is out of range for {len(self)} images")
        sample = self.dataset[int(index)]
        views = multicrop(sample.image, self.spec, seed, sample.id)
        views.index, views.seed = int(index), int(seed)
        return views


def collate_multicrop(items: list[MultiCropViews]) -> dict:
    """Batch views: ``{"global": (B, 3, G, G), "local": (B, V, 3, L, L), "global_box": (B, 4), "local_boxes":
    (B, V, 4), "image_size": (B, 2), "key": (B, 2) int64 (index, item seed), "id": [str]}`` (a DataLoader
    ``collate_fn``). ``key`` identifies each item's views exactly (they are a function of it), which is what
    :class:`nbseg.methods.alignseg.CropFeatureCache` looks features up by."""
    if not items:
        raise DataError("collate_multicrop got an empty list of items.")
    return {
        "global": torch.stack([v.global_crop for v in items]),
        "local": torch.stack([v.local_crops for v in items]),
        "global_box": torch.stack([v.global_box for v in items]),
        "local_boxes": torch.stack([v.local_boxes for v in items]),
        "image_size": torch.stack([v.image_size for v in items]),
        "key": torch.tensor([[v.index, v.seed] for v in items], dtype=torch.long),
        "id": [v.id for v in items],
    }
