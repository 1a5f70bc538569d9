"""Writing a world root in the PASCAL VOC layout (idempotent, atomic, verified and repaired from ``world.json``'s
record of every file) and finding the default root."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from nbseg.io import atomic_write_bytes, atomic_write_text, png_bytes
from nbseg.progress import tqdm
from nbseg.world.classes import TRAIN_SIZE, VAL_INDEX_OFFSET, WorldSpec, class_table
from nbseg.world.files import all_files, damaged_files, file_record, image_index
from nbseg.world.rendering import render


# ----------------------------------------------------------------------------------------------------------
# Writing a root
# ----------------------------------------------------------------------------------------------------------

def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map (256 entries, flattened RGB), so label PNGs look like VOC's."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def image_id(index: int) -> str:
    return f"w{index:07d}"


def split_indices(spec: WorldSpec) -> dict[str, list[int]]:
    return {"train": list(range(spec.n_train)),
            "val": [VAL_INDEX_OFFSET + i for i in range(spec.n_val)]}


def _write_one(job: tuple[str, int, int, int, float, float]) -> tuple[str, list[str]]:
    root, seed, index, size, colour_prior, layout_prior = job
    root_p = Path(root)
    sample = render(seed, index, size, colour_prior, layout_prior)
    name = image_id(index)
    pal = voc_palette()
    files = {
        root_p / "JPEGImages" / f"{name}.png": png_bytes(Image.fromarray(sample.image, "RGB")),
        root_p / "SegmentationClass" / f"{name}.png": png_bytes(_palette_image(sample.voc, pal)),
        root_p / "SegmentationClassFull" / f"{name}.png": png_bytes(_palette_image(sample.full, pal)),
    }
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return name, sample.captions


def _palette_image(label: np.ndarray, pal: list[int]) -> Image.Image:
    im = Image.fromarray(label, "P")
    im.putpalette(pal)
    return im


def default_root(size: int | None = None) -> Path:
    """The default root of the world rendered at ``size`` px (None: :data:`TRAIN_SIZE`): ``<base>/world`` at the
    training size, ``<base>/world_<size>px`` at any other, where ``<base>`` is ``$NBSEG_DATA`` if set, else ``data``
    next to the package's repository checkout."""
    base = os.environ.get("NBSEG_DATA")
    base = Path(base) if base else Path(__file__).resolve().parents[2] / "data"   # nbseg/world/write.py -> checkout
    return base / ("world" if size in (None, TRAIN_SIZE) else f"world_{int(size)}px")


def default_spec(size: int | None = None) -> WorldSpec:
    """The spec of the default root at ``size`` px: :class:`WorldSpec`'s defaults with that size."""
    return WorldSpec() if size in (None, TRAIN_SIZE) else WorldSpec(size=int(size))


def _read_marker(root: Path) -> dict | None:
    try:
        info = json.loads((Path(root) / "world.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def damaged(root: Path, spec: WorldSpec, checksums: bool = False) -> list[str] | None:
    """The files of ``root`` that no longer match what ``world.json`` recorded (see :mod:`nbseg.world.files`), or
    None when the root is not a complete world of ``spec`` at all (no marker, other arguments, no record)."""
    info = _read_marker(root)
    if not info or info.get("spec") != asdict(spec) or not isinstance(info.get("files"), dict):
        return None
    return damaged_files(root, info["files"], checksums)


def is_complete(root: Path, spec: WorldSpec, checksums: bool = False) -> bool:
    """Whether ``root`` is a world of ``spec`` whose every file has its recorded size (and sha256)."""
    return damaged(root, spec, checksums) == []


def _repair(root: Path, spec: WorldSpec, checksums: bool) -> bool:
    """Re-render only the damaged images of a world of ``spec`` (each from its index alone); False when anything
    else is wrong, which a full regeneration fixes."""
    bad = damaged(root, spec, checksums)
    if not bad or any(image_index(rel) is None for rel in bad):
        return False
    for index in sorted({image_index(rel) for rel in bad}):
        _write_one((str(root), spec.seed, index, spec.size, spec.colour_prior, spec.layout_prior))
    return is_complete(root, spec, checksums)


def write_world(root: str | Path | None = None, spec: WorldSpec = WorldSpec(), *, workers: int | None = None,
                progress: bool = True, checksums: bool = False) -> Path:
    """Write the world root (idempotent: an existing complete root with the same spec is kept as is).

    Files are written atomically and ``world.json`` last, with the size and sha256 of every file, so an interrupted
    run leaves no marker and the next call regenerates. What is kept is verified first (sizes; sha256 too with
    ``checksums``): damaged images are re-rendered, anything else damaged regenerates the root.
    """
    root = Path(root) if root is not None else default_root()
    if is_complete(root, spec, checksums) or _repair(root, spec, checksums):
        return root
    marker = root / "world.json"
    if marker.exists():
        marker.unlink()   # a root with other arguments is regenerated in place; stale ids are removed below
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassFull", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    splits = split_indices(spec)
    jobs = [(str(root), spec.seed, idx, spec.size, spec.colour_prior, spec.layout_prior) for split in ("train", "val") for idx in splits[split]]
    captions: dict[str, list[str]] = {}
    workers = workers or min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc=f"world -> {root}", unit="img", disable=not progress)
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            for name, caps in pool.imap(_write_one, jobs, chunksize=16):
                captions[name] = caps
                bar.update()
    else:
        for job in jobs:
            name, caps = _write_one(job)
            captions[name] = caps
            bar.update()
    bar.close()
    wanted = {image_id(i) for idxs in splits.values() for i in idxs}
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassFull"):
        for f in (root / sub).glob("*.png"):
            if f.stem not in wanted:
                f.unlink()
    for split, idxs in splits.items():
        atomic_write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt",
                          "".join(image_id(i) + "\n" for i in idxs))
    atomic_write_text(root / "classes.json", json.dumps(class_table(), indent=1))
    lines = [json.dumps({"id": image_id(i), "captions": captions[image_id(i)]})
             for split in ("train", "val") for i in splits[split]]
    atomic_write_text(root / "captions.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(marker, json.dumps({"spec": asdict(spec), "generator": "nbseg.world",
                                          "files": file_record(root, all_files(root))}, indent=1))
    return root


def ensure_world(root: str | Path | None = None, spec: WorldSpec = WorldSpec(), progress: bool = True) -> Path:
    """Return a complete world root, generating it first when absent and re-rendering files whose size is not the
    recorded one (every command that needs the world calls this)."""
    return write_world(root, spec, progress=progress)
