"""Segment a user's own images with any trained model of a registered method: label PNGs and overlays
(``nbseg segment``; the model only needs ``predict`` and ``backbone.patch_size``).

For every input image ``NAME.ext`` two files are written into the output folder, each atomically (temporary file,
then rename, so an interrupted run never leaves a truncated PNG and never destroys an earlier one):

* ``NAME.png`` - the prototype id of every pixel (0..K-1) as a palette PNG at the image's own size: viewers show the
  VOC colours, and ``nbseg eval --pred`` reads the ids;
* ``NAME_overlay.png`` - the image with the prototype colours blended over it.

Unreadable images (corrupt, truncated, not an image): **skip and report**. The other images are still segmented, the
files already written stay, and the report (and the command's exit status 1) lists every skipped file with the
reason. Before anything is written, :func:`nbseg.io.check_outputs` refuses an output folder that holds the inputs
(label maps would replace or mix with the user's images) and outputs that exist already unless ``overwrite``; two
inputs that would write the same output name are refused too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nbseg.backbones import resize_to_patch_multiple
from nbseg.cluster import upsample_labels
from nbseg.data.images import read_rgb as read_image_rgb
from nbseg.errors import ConfigError, DataError
from nbseg.io import atomic_write_bytes, check_outputs, png_bytes
from nbseg.progress import tqdm
from nbseg.viz import overlay
from nbseg.world import voc_palette

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
OVERLAY_SUFFIX = "_overlay"


@dataclass
class SegmentReport:
    """What :func:`segment_images` did: ``written`` (label PNG, overlay PNG) per image, ``failed`` (input, reason)."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"segmented {len(self.written)} image(s)"
        if self.failed:
            text += f"; skipped {len(self.failed)} unreadable file(s):\n" + "\n".join(
                f"  {path}: {reason}" for path, reason in self.failed)
        return text


def collect_inputs(inputs) -> list[Path]:
    """Image files from ``inputs`` (files, taken whatever their suffix, and folders, whose files with an image
    suffix are taken, not recursively), sorted per folder. A missing path, an empty folder or two inputs with the
    same file stem (they would write the same outputs) is a :class:`ConfigError` raised before anything runs."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"input {path} does not exist: pass image files or folders of images")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem and by_stem[path.stem].resolve() != path.resolve():
            raise ConfigError(f"{by_stem[path.stem]} and {path} would both write {path.stem}.png: rename one or "
                              "segment them into different --out folders")
        by_stem[path.stem] = path
    return list(dict.fromkeys(files))


def read_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1] through nbseg's one image reader (16-bit, grey, palette, alpha, EXIF orientation);
    a :class:`DataError` naming the file for anything it cannot read."""
    return read_image_rgb(path)


def resize_short_side(image: torch.Tensor, size: int | None, patch_size: int) -> torch.Tensor:
    """Resize (3, H, W) so its short side is ``size`` (aspect kept; None: as is), then down to multiples of the
    patch size (what the backbone needs)."""
    H, W = image.shape[-2:]
    if size:
        scale = size / min(H, W)
        image = resize_to_patch_multiple(image[None], patch_size, (max(1, round(H * scale)),
                                                                   max(1, round(W * scale))))[0]
    return resize_to_patch_multiple(image[None], patch_size)[0]


def label_png(labels: np.ndarray) -> bytes:
    """A palette PNG of (H, W) ids 0..255 with the VOC colours."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    return png_bytes(image)


def overlay_png(image: torch.Tensor, labels: np.ndarray, alpha: float = 0.5) -> bytes:
    blended = overlay(image, labels, alpha=alpha, ignore_index=None)
    return png_bytes(Image.fromarray((np.clip(blended, 0, 1) * 255).round().astype(np.uint8)))


def output_paths(files: list[Path], out_dir: str | Path) -> list[Path]:
    """The label PNG and the overlay each input writes into ``out_dir``."""
    out_dir = Path(out_dir)
    return [p for f in files for p in (out_dir / f"{f.stem}.png", out_dir / f"{f.stem}{OVERLAY_SUFFIX}.png")]


def check_segment_outputs(inputs, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """The input files, after refusing (before anything is read or written) an ``out_dir`` that holds inputs and
    outputs that exist already (unless ``overwrite``)."""
    files = collect_inputs(inputs)
    folders = [Path(i) for i in inputs if Path(i).is_dir()] + [f.parent for f in files]
    check_outputs(output_paths(files, out_dir), inputs=folders, overwrite=overwrite)
    return files


def segment_images(method, inputs, out_dir: str | Path, *, size: int | None = None, alpha: float = 0.5,
                   progress: bool = True, overwrite: bool = False) -> SegmentReport:
    """Segment image files with a trained model and write ``NAME.png`` (ids) and ``NAME_overlay.png`` into
    ``out_dir`` (see the module docstring; unreadable files are skipped and reported).

    Args:
        method: a trained model (e.g. from :func:`nbseg.methods.workflow.load_trained`).
        inputs: image files and / or folders.
        size: resize so the short side is ``size`` pixels before inference (labels are brought back to the
            image's size, nearest); None keeps the image's size (rounded down to the patch size).
        overwrite: replace outputs that exist already (else they are an :class:`~nbseg.errors.OutputError`).
    """
    files = check_segment_outputs(inputs, out_dir, overwrite)
    if size is not None and size < method.backbone.patch_size:
        raise ConfigError(f"size {size} is smaller than one patch ({method.backbone.patch_size} px)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SegmentReport()
    for path in tqdm(files, desc="segment", unit="image", disable=not progress):
        try:
            image = read_rgb(path)
        except DataError as err:
            report.failed.append((path, str(err)))
            continue
        resized = resize_short_side(image, size, method.backbone.patch_size)
        labels = method.predict(resized[None])[0].cpu()
        labels = upsample_labels(labels, tuple(image.shape[-2:])).numpy()
        label_path = atomic_write_bytes(out_dir / f"{path.stem}.png", label_png(labels))
        overlay_path = atomic_write_bytes(out_dir / f"{path.stem}{OVERLAY_SUFFIX}.png",
                                          overlay_png(image, labels, alpha))
        report.written.append((label_path, overlay_path))
    return report


__all__ = ["segment_images", "SegmentReport", "collect_inputs", "check_segment_outputs", "output_paths", "read_rgb", "label_png", "IMAGE_SUFFIXES"]
