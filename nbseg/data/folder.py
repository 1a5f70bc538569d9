"""Bring your own data: every image under a folder, with optional masks matched by file stem.

``load_dataset("folder", root="photos/")`` gives unlabelled samples (``label`` is None);
``load_dataset("folder", root="photos/", masks_dir="masks/", num_classes=5)`` pairs ``photos/a/x.jpg`` with
``masks/x.png`` (any depth; masks are index PNGs, 255 = ignore). Without ``num_classes`` or ``class_names`` the
number of classes is inferred from the largest mask value, which reads every mask once.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from nbseg.data.base import IGNORE_INDEX, IMAGE_SUFFIXES, SegDataset, Transform, read_label, require_dir
from nbseg.errors import DataError


def _image_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, skipping anything inside ``exclude``."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude.resolve()):
            continue
        files.append(path)
    return files


class FolderDataset(SegDataset):
    """Images of ``root`` (jpg/png/bmp/tif, flat or nested); ids are paths relative to ``root`` without suffix."""

    name = "folder"
    label_hint = ("masks must hold class ids 0..num_classes-1 and 255 for ignore; pass num_classes=N or "
                  "class_names=[...] matching your masks, or remap them")

    def __init__(self, root: str | Path, split: str = "all", transform: Transform | None = None, *,
                 masks_dir: str | Path | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None):
        root = require_dir(Path(root), "image folder", "pass a folder holding .jpg/.png/.bmp/.tif images")
        masks = _resolve_masks_dir(root, masks_dir)
        self.image_files = _image_files(root, exclude=masks)
        if not self.image_files:
            raise DataError(f"no images (.jpg/.png/.bmp/.tif) under {root}. Fix: pass the folder holding them.")
        self.mask_files = _match_masks(self.image_files, masks) if masks is not None else None
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise DataError(f"class_names has {len(class_names)} names but num_classes={num_classes}. Fix: give one "
                            f"name per class, or only one of the two.")
        if class_names is None:
            if num_classes is None:
                num_classes = _infer_num_classes(self.mask_files) if self.mask_files else 0
            class_names = [f"class {k}" for k in range(num_classes)]
        ids = [p.relative_to(root).with_suffix("").as_posix() for p in self.image_files]
        # The folder has no splits; "all" is recorded whatever was asked.
        super().__init__(root, "all", ids, class_names, transform=transform,
                         label_set=f"{len(class_names)} classes" if masks is not None else "unlabelled")

    @classmethod
    def splits(cls, root: str | Path) -> list[str]:
        return ["all"]

    def image_path(self, i: int) -> Path:
        return self.image_files[i]

    def label_path(self, i: int) -> Path | None:
        return self.mask_files[i] if self.mask_files is not None else None


def _resolve_masks_dir(root: Path, masks_dir: str | Path | None) -> Path | None:
    """``masks_dir`` as given, or relative to ``root`` when that is where it exists."""
    if masks_dir is None:
        return None
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir() and not masks_dir.is_absolute() and (root / masks_dir).is_dir():
        masks_dir = root / masks_dir
    return require_dir(masks_dir, "mask folder", "pass the folder holding one mask per image (same file stem)")


def _match_masks(image_files: list[Path], masks_dir: Path) -> list[Path]:
    """One mask per image, matched by file stem; ambiguous or missing matches are errors."""
    by_stem: dict[str, Path] = {}
    for mask in _image_files(masks_dir):
        if mask.stem in by_stem:
            raise DataError(f"two masks share the stem {mask.stem!r}: {by_stem[mask.stem]} and {mask}. Fix: masks "
                            f"are matched to images by file stem, so stems must be unique.")
        by_stem[mask.stem] = mask
    repeated = sorted(stem for stem, n in Counter(p.stem for p in image_files).items() if n > 1)
    if repeated:
        raise DataError(f"several images share the stem {repeated[0]!r}, so masks cannot be matched by stem. "
                        f"Fix: rename the images so stems are unique.")
    missing = [p for p in image_files if p.stem not in by_stem]
    if missing:
        raise DataError(f"no mask for image {missing[0]} ({len(missing)} of {len(image_files)} images unmatched) in "
                        f"{masks_dir}. Fix: add {masks_dir / (missing[0].stem + '.png')}, or remove the image.")
    return [by_stem[p.stem] for p in image_files]


def _infer_num_classes(mask_files: list[Path]) -> int:
    """1 + the largest non-ignore value over all masks."""
    largest = -1
    for mask in mask_files:
        values = read_label(mask)
        values = values[values != IGNORE_INDEX]
        if values.numel():
            largest = max(largest, int(values.max()))
    return largest + 1
