"""Label maps as colours: the VOC palette, colourised label maps and overlays on images, and the array helpers that
accept torch tensors or numpy arrays in either image layout."""
from __future__ import annotations

from typing import Any

import numpy as np

from nbseg.world import voc_palette

__all__ = ["IGNORE_INDEX", "IGNORE_COLOR", "label_palette", "colorize", "overlay"]

IGNORE_INDEX = 255
# Ignored pixels are drawn white: VOC's colour 0 (background) is black, so white cannot be confused with a class.
IGNORE_COLOR = np.array([255, 255, 255], dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# array helpers


def _to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (detached, moved to the CPU) or anything ``np.asarray`` takes, as a numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch for numpy callers
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _as_batch(items: Any) -> list[np.ndarray]:
    """A batch given as a stacked tensor / array (first axis = batch) or as a sequence, as a list of arrays."""
    if hasattr(items, "detach") or isinstance(items, np.ndarray):
        return list(_to_numpy(items))
    return [_to_numpy(item) for item in items]


def _image_hwc(image: Any) -> np.ndarray:
    """An image as an ``(H, W, 3)`` float array in [0, 1], from ``(3, H, W)``, ``(H, W, 3)`` or ``(H, W)``."""
    img = _to_numpy(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    elif img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W), (H, W, 3) or (H, W), got {tuple(img.shape)}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    # Normalised tensors (ImageNet mean / std) fall slightly outside [0, 1]; clipping keeps imshow from warning.
    return np.clip(img.astype(np.float32), 0.0, 1.0)


def _label_2d(label: Any, name: str = "label map") -> np.ndarray:
    """A label map or mask as a 2-D array; a leading axis of size 1 (``(1, H, W)``) is dropped."""
    arr = _to_numpy(label)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a {name} of shape (H, W), got {tuple(arr.shape)}")
    return arr


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of ``array`` to ``size = (H, W)`` (up or down)."""
    h, w = array.shape[:2]
    height, width = size
    if (h, w) == (height, width):
        return array
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    return array[rows][:, cols]


def _binary_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks; NaN when both are empty (nothing to agree on)."""
    union = np.logical_or(pred, target).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(pred, target).sum() / union)


# ----------------------------------------------------------------------------------------------------------------
# colours


def label_palette(n: int) -> np.ndarray:
    """The first ``n`` colours of the PASCAL VOC colour map as an ``(n, 3)`` uint8 array (row i = class i)."""
    if not 0 <= n <= 256:
        raise ValueError(f"label_palette(n={n}): the VOC colour map has 256 colours; ask for 0..256")
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)[:n].copy()


def colorize(label: Any, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Colour a label map ``(H, W)`` int with the VOC colours; ``ignore_index`` pixels are white.

    Returns an ``(H, W, 3)`` uint8 image. Labels must lie in 0..255 (the VOC colour map's range).
    """
    lab = _label_2d(label).astype(np.int64)
    valid = np.ones(lab.shape, dtype=bool) if ignore_index is None else lab != ignore_index
    if valid.any():
        low, high = int(lab[valid].min()), int(lab[valid].max())
        if low < 0 or high > 255:
            raise ValueError(f"colorize: labels must lie in 0..255 (besides ignore_index={ignore_index}), "
                             f"got values from {low} to {high}; remap the labels or pass ignore_index")
    out = np.empty(lab.shape + (3,), dtype=np.uint8)
    out[valid] = label_palette(256)[lab[valid]]
    out[~valid] = IGNORE_COLOR
    return out


def overlay(image: Any, label: Any, alpha: float = 0.5, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Blend the colours of ``label`` over ``image``; returns an ``(H, W, 3)`` float array in [0, 1].

    ``label`` (h, w) is resized to the image with nearest neighbour when its size differs (a patch-level map
    over a full-size image). Ignored pixels keep the plain image, so unlabelled regions stay visible.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must lie in [0, 1], got {alpha}")
    img = _image_hwc(image)
    lab = _resize_nearest(_label_2d(label), img.shape[:2])
    colours = colorize(lab, ignore_index).astype(np.float32) / 255.0
    out = (1.0 - alpha) * img + alpha * colours
    if ignore_index is not None:
        ignored = lab == ignore_index
        out[ignored] = img[ignored]
    return out
