"""The dataset contract every loader follows, the readers and checks they share, transforms and collation.

A dataset yields :class:`SegSample` objects: ``image`` (3, H, W) float in [0, 1], ``label`` (H, W) int64 with
class ids ``0 .. num_classes-1`` and ``ignore_index`` (255) for pixels that are not scored, or ``None`` for
unlabelled images. Images are *not* normalised here; backbones do that.

Subclasses only say where files are (:meth:`SegDataset.image_path`, :meth:`SegDataset.label_path`) and, when the
raw label values are not class ids already, give a lookup table (:func:`label_lut`). The base class reads, maps and
validates every sample, so a malformed file is a :class:`~nbseg.errors.DataError` that names the file, the value
and the fix instead of a silent wrong number in an mIoU table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from nbseg.data.images import read_label_array, read_rgb
from nbseg.errors import DataError

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Marks raw label values that no valid file of the dataset contains (see ``label_lut``).
INVALID = -1

# ``(image (3, H, W), label (H, W) or None) -> (image, label)``
Transform = Callable[[torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass
class SegSample:
    """One image: ``image`` (3, H, W) float32 in [0, 1], ``label`` (H, W) int64 (255 = ignore) or None, ``id``."""

    image: torch.Tensor
    label: torch.Tensor | None
    id: str


# ----------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------

def read_image(path: Path) -> torch.Tensor:
    """Read an image file as RGB float32 (3, H, W) in [0, 1] through nbseg's one reader
    (:func:`nbseg.data.images.read_rgb`: 8/16-bit, grey, palette, alpha, EXIF orientation, or a DataError)."""
    return read_rgb(path)


def read_label(path: Path) -> torch.Tensor:
    """Read a label map as raw integer values (H, W) int64 (:func:`nbseg.data.images.read_label_array`)."""
    return torch.from_numpy(read_label_array(path))


def read_id_list(path: Path, fix: str = "") -> list[str]:
    """Image ids of a split file, one per line.

    Only the first whitespace-separated token of a line counts, and a token that is a path (DeepLab's
    ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` lists) is reduced to its stem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} is missing.{' Fix: ' + fix if fix else ''}")
    ids = []
    for line in path.read_text().splitlines():
        tokens = line.split()
        if not tokens:
            continue
        token = tokens[0]
        if "/" in token or token.lower().endswith(IMAGE_SUFFIXES):
            token = Path(token).stem
        ids.append(token)
    if not ids:
        raise DataError(f"split file {path} lists no image ids. Fix: write one id per line.")
    return ids


def require_dir(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a folder, else a DataError saying what it should hold and how to get it."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist. Fix: {fix}")
    return path


def find_file(folder: Path, stem: str, suffixes: Sequence[str], what: str) -> Path:
    """The first existing ``folder/<stem><suffix>``; a DataError naming every path tried otherwise."""
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(folder / f"{stem}{s}") for s in suffixes)
    raise DataError(f"{what} for id {stem!r} is listed but missing (tried {tried}). Fix: restore the file, or "
                    f"remove the id from the split list.")


def label_lut(raw_to_class: Sequence[int], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lookup table (256,) int64 from raw label value to class id.

    ``raw_to_class[v]`` is the class of raw value ``v`` (``ignore_index`` to ignore it). Raw values beyond the
    sequence are INVALID (an error when met), except ``ignore_index`` itself, which stays ignored.
    """
    lut = torch.full((256,), INVALID, dtype=torch.long)
    lut[: len(raw_to_class)] = torch.as_tensor(list(raw_to_class), dtype=torch.long)
    lut[ignore_index] = ignore_index
    return lut


# ----------------------------------------------------------------------------------------------------------
# The dataset base class
# ----------------------------------------------------------------------------------------------------------

class SegDataset(Dataset):
    """Base of every nbseg dataset.

    Attributes: ``name`` (registry name), ``root``, ``split``, ``ids`` (one per sample, in split-file order),
    ``class_names``, ``num_classes``, ``ignore_index`` (255), ``transform`` (``(image, label) -> (image, label)``,
    applied after loading and validation), ``label_lut`` ((256,) raw value -> class id, or None when raw values
    are class ids already) and ``label_set`` (a few words for :meth:`describe`).
    """

    name: str = "dataset"
    ignore_index: int = IGNORE_INDEX
    # Appended to "label value out of range" errors: what the dataset's label files should hold.
    label_hint: str = "check that the label files of this dataset hold class ids, not colours"

    def __init__(self, root: str | Path, split: str, ids: list[str], class_names: list[str], *,
                 transform: Transform | None = None, label_lut: torch.Tensor | None = None,
                 label_set: str | None = None):
        self.root = Path(root)
        self.split = split
        self.ids = list(ids)
        self.class_names = list(class_names)
        self.transform = transform
        self.label_lut = label_lut
        self.label_set = label_set or f"{len(self.class_names)} classes"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- what subclasses provide ---------------------------------------------------------------------------
    @classmethod
    def splits(cls, root: str | Path) -> list[str]:
        """The splits present under ``root`` (what ``nbseg data check`` validates by default)."""
        raise NotImplementedError

    def image_path(self, i: int) -> Path:
        raise NotImplementedError

    def label_path(self, i: int) -> Path | None:
        """Path of sample ``i``'s label file, or None when the sample is unlabelled."""
        raise NotImplementedError

    def read_image(self, path: Path) -> torch.Tensor:
        """(3, H, W) float in [0, 1]; override for non-image files (Potsdam's .mat)."""
        return read_image(path)

    def read_label(self, path: Path) -> torch.Tensor:
        """(H, W) int64 raw values; override for non-image files."""
        return read_label(path)

    # -- shared behaviour ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> SegSample:
        image_path = self.image_path(i)
        image = self.read_image(image_path)
        label = None
        label_path = self.label_path(i)
        if label_path is not None:
            label = self.checked_label(self.read_label(label_path), label_path, image, image_path)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return SegSample(image=image, label=label, id=self.ids[i])

    def checked_label(self, raw: torch.Tensor, label_path: Path, image: torch.Tensor,
                      image_path: Path) -> torch.Tensor:
        """Map raw values to class ids and validate: same size as the image, every value a class or ignore."""
        if tuple(raw.shape) != tuple(image.shape[-2:]):
            raise DataError(
                f"label map {label_path} is {raw.shape[-1]}x{raw.shape[-2]} (WxH) but its image {image_path} is "
                f"{image.shape[-1]}x{image.shape[-2]}. Fix: labels must have the image's exact size; regenerate "
                f"or resize the label map with nearest-neighbour interpolation.")
        if self.label_lut is not None:
            label = self._apply_lut(raw, label_path)
        else:
            label = raw
        # One max/min over the tensor is cheap; the masked search only runs when something is wrong.
        if int(label.max()) >= self.num_classes or int(label.min()) < 0:
            bad = label[(label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))]
            if bad.numel():
                raise DataError(
                    f"label value {int(bad[0])} in {label_path} is out of range for {self.name} "
                    f"({self.num_classes} classes 0..{self.num_classes - 1}, {self.ignore_index} = ignore; "
                    f"{bad.numel()} pixels affected). Fix: {self.label_hint}.")
        return label

    def _apply_lut(self, raw: torch.Tensor, label_path: Path) -> torch.Tensor:
        lut = self.label_lut
        if int(raw.min()) < 0 or int(raw.max()) >= len(lut):
            bad = raw[(raw < 0) | (raw >= len(lut))]
            self._raise_invalid_raw(int(bad[0]), int(bad.numel()), label_path)
        label = lut[raw]
        invalid = label == INVALID
        if bool(invalid.any()):
            self._raise_invalid_raw(int(raw[invalid][0]), int(invalid.sum()), label_path)
        return label

    def _raise_invalid_raw(self, value: int, count: int, label_path: Path) -> None:
        valid = [v for v in range(len(self.label_lut)) if int(self.label_lut[v]) != INVALID]
        raise DataError(
            f"label value {value} in {label_path} is not a valid raw label of {self.name} (valid: "
            f"{_ranges(valid)}; {count} pixels affected). Fix: {self.label_hint}.")

    def describe(self) -> str:
        """One line for figure titles, e.g. ``world/val (voc labels, 300 images)``."""
        return f"{self.name}/{self.split} ({self.label_set}, {len(self)} images)"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} at {self.root}>"


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 255]`` -> ``"0..2, 5, 255"``."""
    parts, start = [], None
    for k, v in enumerate(values):
        if start is None:
            start = v
        if k + 1 == len(values) or values[k + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}..{v}")
            start = None
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------------------
# Transforms: pure functions of (image (3, H, W), label (H, W) or None)
# ----------------------------------------------------------------------------------------------------------

def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, out_hw: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize image (3, H, W) bilinearly with antialiasing and label (H, W) by nearest neighbour to ``out_hw``.

    The label is resized by picking source pixels (PIL's nearest rule: source = floor((dst + 0.5) * in / out)),
    so it never contains a value that was not in the input.
    """
    out_h, out_w = out_hw
    if tuple(image.shape[-2:]) != (out_h, out_w):
        image = F.interpolate(image[None], size=(out_h, out_w), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp_(0.0, 1.0)
    if label is not None and tuple(label.shape) != (out_h, out_w):
        in_h, in_w = label.shape
        rows = ((torch.arange(out_h) + 0.5) * (in_h / out_h)).long().clamp_(max=in_h - 1)
        cols = ((torch.arange(out_w) + 0.5) * (in_w / out_w)).long().clamp_(max=in_w - 1)
        label = label[rows][:, cols]
    return image, label


@dataclass(frozen=True)
class Resize:
    """Resize the short side to ``size`` keeping the aspect ratio (long side truncated, as torchvision does)."""

    size: int

    def __call__(self, image, label=None):
        h, w = image.shape[-2:]
        if h <= w:
            out = (self.size, int(self.size * w / h))
        else:
            out = (int(self.size * h / w), self.size)
        return resize_pair(image, label, out)


@dataclass(frozen=True)
class ResizeSquare:
    """Resize both sides to ``size`` (int or (h, w)) without keeping the aspect ratio (AlignSeg's evaluation)."""

    size: int | tuple[int, int]

    def __call__(self, image, label=None):
        return resize_pair(image, label, _pair(self.size))


@dataclass(frozen=True)
class CenterCrop:
    """Crop the central ``size`` (int or (h, w)) window; the image must be at least that large."""

    size: int | tuple[int, int]

    def __call__(self, image, label=None):
        crop_h, crop_w = _pair(self.size)
        h, w = image.shape[-2:]
        if crop_h > h or crop_w > w:
            raise DataError(f"CenterCrop({self.size}) does not fit a {w}x{h} (WxH) image. Fix: put "
                            f"Resize({max(crop_h, crop_w)}) before the crop.")
        top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
        image = image[:, top:top + crop_h, left:left + crop_w]
        if label is not None:
            label = label[top:top + crop_h, left:left + crop_w]
        return image, label


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order."""

    transforms: tuple

    def __init__(self, transforms: Sequence[Transform]):
        object.__setattr__(self, "transforms", tuple(transforms))

    def __call__(self, image, label=None):
        for transform in self.transforms:
            image, label = transform(image, label)
        return image, label


# ----------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------

def collate_samples(samples: list[SegSample]) -> dict:
    """Stack samples into ``{"image": (B, 3, H, W), "label": (B, H, W) or None, "id": [str]}`` (a DataLoader
    ``collate_fn``). All images must share one size; all samples must be labelled or all unlabelled."""
    if not samples:
        raise DataError("collate_samples got an empty list of samples.")
    sizes = {tuple(s.image.shape) for s in samples}
    if len(sizes) > 1:
        shown = ", ".join(f"{s.id}: {tuple(s.image.shape[-2:])}" for s in samples[:4])
        raise DataError(f"cannot batch images of different sizes ({shown}, ...). Fix: give the dataset a "
                        f"transform such as Compose([Resize(224), CenterCrop(224)]) or ResizeSquare(224).")
    labelled = [s.label is not None for s in samples]
    if any(labelled) and not all(labelled):
        raise DataError("cannot batch labelled and unlabelled samples together (ids "
                        f"{[s.id for s in samples if s.label is None][:4]} have no label).")
    return {
        "image": torch.stack([s.image for s in samples]),
        "label": torch.stack([s.label for s in samples]) if all(labelled) else None,
        "id": [s.id for s in samples],
    }
