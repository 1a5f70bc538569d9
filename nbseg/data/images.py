"""The one image reader of nbseg: datasets, ``nbseg segment`` and ``nbseg eval`` all read pixels through here.

Why one reader: PIL's ``convert("RGB")`` clips 16-bit pixels to 255, so a 16-bit PNG came out white and every
command still exited 0 with a plausible label map; and a phone photo whose EXIF says "rotated" was read sideways.
Here every mode is either read with its real range or refused by name:

* 8-bit RGB, grey (``L``), 1-bit, palette (``P``, its colours), CMYK, YCbCr: converted to RGB;
* with alpha (``RGBA``, ``LA``, ``PA``, a palette with a transparent entry): the colour channels are kept and the
  alpha is dropped (what a viewer shows over black would invent colours the image does not have);
* 16-bit grey (``I;16*``, or ``I`` from a 16-bit PNG): scaled by 1/65535; 16-bit RGB PNGs are decoded by PIL to
  8 bits per channel already;
* 32-bit float grey (``F``) in [0, 1]: as is;
* anything else (``I`` beyond 16 bits, ``F`` outside [0, 1], multi-channel TIFF modes PIL does not know): a
  :class:`~nbseg.errors.DataError` naming the file, its mode and how to save it instead.

The EXIF orientation tag is applied to images and label maps alike, so both come out as a viewer shows them.
Label maps keep their raw integer values (palette indices, not colours).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nbseg.errors import DataError

COLOUR_MODES = ("RGB", "L", "1", "P", "CMYK", "YCbCr", "RGBX")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
LABEL_MODES = ("P", "L", "1", "I", *SIXTEEN_BIT_MODES)
SAVE_HINT = "save it as an 8- or 16-bit RGB or greyscale PNG (or a JPEG)"


class opened:
    """``with opened(path, what) as im``: open and fully decode a PIL image, turning every failure into a
    DataError naming the file (PIL decodes lazily, so a truncated file only fails on ``load``). The image is
    already turned as its EXIF orientation says."""

    def __init__(self, path: str | Path, what: str = "image"):
        self.path, self.what = Path(path), what

    def __enter__(self) -> Image.Image:
        if not self.path.is_file():
            raise DataError(f"{self.what} {self.path} is listed but missing. Fix: restore the file, or remove its "
                            f"id from the split list.")
        try:
            self.raw = Image.open(self.path)
            self.raw.load()
            self.im = ImageOps.exif_transpose(self.raw)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{self.what} {self.path} cannot be read ({type(err).__name__}: {err}). Fix: the file "
                            f"is corrupt or not an image; re-extract or re-download it.") from err
        return self.im

    def __exit__(self, *exc) -> None:
        self.raw.close()


def rgb_array(im: Image.Image, path: str | Path = "image") -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from a decoded PIL image of any supported mode (see the module docstring)."""
    mode = im.mode
    if mode in COLOUR_MODES and not (mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if mode in ALPHA_MODES or mode == "P":
        return np.asarray(im.convert("RGBA"), dtype=np.float32)[..., :3] / 255.0
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(im).astype(np.float32)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"image {path} is a 32-bit integer image (values {values.min():.0f}..{values.max():.0f}); "
                            f"nbseg cannot tell its range. Fix: {SAVE_HINT}.")
        return np.repeat((values / 65535.0)[..., None], 3, axis=-1)
    if mode == "F":
        values = np.asarray(im, dtype=np.float32)
        if values.size and (values.min() < 0 or values.max() > 1):
            raise DataError(f"image {path} is a floating-point image with values outside [0, 1] "
                            f"({values.min():.3g}..{values.max():.3g}). Fix: {SAVE_HINT}.")
        return np.repeat(values[..., None], 3, axis=-1)
    raise DataError(f"image {path} has PIL mode {mode!r}, which nbseg does not read. Fix: {SAVE_HINT}.")


def read_rgb(path: str | Path, what: str = "image") -> torch.Tensor:
    """Read an image file as RGB float32 (3, H, W) in [0, 1] (every mode of the module docstring)."""
    with opened(path, what) as im:
        array = rgb_array(im, path)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def read_label_array(path: str | Path, what: str = "label map") -> np.ndarray:
    """Read a label map as raw integer values (H, W) int64.

    Palette ("P") PNGs are read as their indices, not their colours, which is how VOC, the world and most
    segmentation datasets store class ids; grey ("L"), 1-bit and 16/32-bit integer images are read as they are.
    """
    with opened(path, what) as im:
        if im.mode not in LABEL_MODES:
            raise DataError(
                f"{what} {path} has PIL mode {im.mode!r} (colours), but nbseg needs one class index per pixel. "
                f"Fix: save the label as a palette ('P') or greyscale ('L') PNG whose pixel values are class ids.")
        return np.asarray(im).astype(np.int64)


__all__ = ["read_rgb", "read_label_array", "rgb_array", "opened"]
