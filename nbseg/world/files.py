"""What a world root must hold, checked: the size and sha256 of every file, recorded in ``world.json``.

Why: a root whose ``world.json`` matched the arguments used to be kept as is, so one truncated image survived every
``nbseg world`` ("written in 0.0 s") and failed later, deep inside a training run. :func:`nbseg.world.write.write_world`
records every file it writes here and, on the next call, keeps only what still matches: sizes on every call (a
``stat`` per file, cheap enough for each command that needs the world), sha256 checksums when asked
(``nbseg world``). A damaged image is re-rendered from its index alone; a damaged list or table is rewritten.
"""
from __future__ import annotations

import re
from pathlib import Path

from nbseg.io import sha256_file

IMAGE_FOLDERS = ("JPEGImages", "SegmentationClass", "SegmentationClassFull")
_IMAGE_FILE = re.compile(r"^w(\d{7})\.png$")


def file_record(root: Path, relpaths) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` of the files of ``root``."""
    root = Path(root)
    return {rel: {"size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)} for rel in sorted(relpaths)}


def all_files(root: Path) -> list[str]:
    """Every file of a world root except ``world.json`` (the record itself) and temporary files."""
    root = Path(root)
    return [p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and p.name != "world.json" and not p.name.startswith(".")]


def damaged_files(root: Path, record: dict[str, dict], checksums: bool = False) -> list[str]:
    """The recorded files that are missing, of another size or (with ``checksums``) of another sha256."""
    root = Path(root)
    bad = []
    for rel, expected in record.items():
        path = root / rel
        try:
            size = path.stat().st_size
        except OSError:
            bad.append(rel)
            continue
        if size != expected.get("size") or (checksums and sha256_file(path) != expected.get("sha256")):
            bad.append(rel)
    return bad


def image_index(relpath: str) -> int | None:
    """The world index of an image or label file (``JPEGImages/w0000012.png`` -> 12), None for other files."""
    folder, _, name = relpath.partition("/")
    match = _IMAGE_FILE.match(name)
    return int(match.group(1)) if folder in IMAGE_FOLDERS and match else None


__all__ = ["file_record", "all_files", "damaged_files", "image_index"]
