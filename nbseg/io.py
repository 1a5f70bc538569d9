"""Atomic file writing and small serialisation helpers shared by every command.

Everything nbseg writes (images, label maps, checkpoints, metrics) goes through these functions: the bytes land in
a temporary file in the destination folder and are renamed over the target, so an interrupted run never leaves a
truncated file behind and never destroys what was there before. A full disk (or a quota, or a read-only mount)
becomes a :class:`~nbseg.errors.StorageError` of one line naming the file, the bytes it needed and how to resume;
the file that was there before stays intact.

Commands that write into a folder or file the user names (``--out``, ``OUT_FILE``) go through
:func:`check_outputs` first: it refuses to write into a folder that holds the command's inputs, and to replace
existing files unless the user passed ``--overwrite``.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from nbseg.errors import OutputError, StorageError

# errno values that mean "the storage refused", not "the program is wrong": they become StorageError.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "the file system is read-only", errno.EFBIG: "file too large for the file system"}
DEFAULT_RESUME_HINT = "free some space (or choose another location) and run the same command again"


def _write_file(f, data: bytes, path: Path) -> None:
    """The one low-level write of every nbseg output, into ``f`` (the temporary file of ``path``); tests replace it
    to simulate a full disk."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def storage_error(err: OSError, path: Path, n_bytes: int, resume: str | None = None) -> StorageError:
    """``err`` as a one-line :class:`StorageError`: the file, the bytes needed, the free space, how to resume."""
    try:
        free = f", {format_bytes(shutil.disk_usage(path.parent).free)} free there"
    except OSError:
        free = ""
    reason = STORAGE_ERRNOS.get(err.errno, err.strerror or str(err))
    return StorageError(f"cannot write {path}: {reason} ({format_bytes(n_bytes)} needed{free}); "
                        f"{resume or DEFAULT_RESUME_HINT}")


def format_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def checkpoint_resume_hint(checkpoint: Path) -> str:
    """What a run stopped by a full disk at a checkpoint should do: the previous checkpoint is intact."""
    if Path(checkpoint).exists():
        return (f"the previous checkpoint {checkpoint} is intact: free some space and run the same command again "
                "to resume from it")
    return "free some space and run the same command again (no checkpoint was written yet: it starts over)"


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, resume: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    A storage failure (full disk, quota, read-only) raises :class:`StorageError` saying ``resume`` (what to do
    next); the previous file at ``path``, if any, is left as it was and the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno in STORAGE_ERRNOS:
            raise storage_error(err, path, len(data), resume) from None
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            _write_file(f, data, path)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            raise storage_error(err, path, len(data), resume) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, resume: str | None = None) -> Path:
    """``torch.save`` through a temporary file and a rename (``resume``: see :func:`atomic_write_bytes`)."""
    import torch   # here, not at the top: `nbseg --help` imports this module and must not load torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue(), resume=resume)


def png_bytes(image) -> bytes:
    """Encode a PIL image as PNG bytes (deterministic: no timestamps, fixed compression)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (PNG unless the suffix says otherwise)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------------------
# where a command may write


def check_outputs(targets: Iterable[str | os.PathLike], *, inputs: Iterable[str | os.PathLike] = (),
                  overwrite: bool = False, flag: str = "--overwrite", what: str = "output") -> list[Path]:
    """Refuse, before anything is written, outputs that would destroy what the user has.

    * a target that is one of ``inputs``, or lies directly in a folder among ``inputs`` (a command that reads
      folders passes them, and the folders of the files it reads when outputs must not mix with them): writing
      there would replace the user's files or mix outputs with inputs;
    * a target that exists already, unless ``overwrite`` (the user passed ``flag``).

    Returns the targets as paths. Raises :class:`OutputError` naming the files and the two ways out.
    """
    targets = [Path(t) for t in targets]
    protected = [Path(item).resolve() for item in inputs]
    input_dirs = {item for item in protected if item.is_dir()}
    input_files = set(protected) - input_dirs
    for target in targets:
        resolved = target.resolve()
        if resolved in input_files:
            raise OutputError(f"{what} {target} is one of the inputs: writing it would destroy the input; "
                              "choose another output path")
        if resolved.parent in input_dirs:
            raise OutputError(f"{what} {target} would be written into {target.parent}, which holds the inputs "
                              "(their files would be replaced or mixed with the outputs); choose another output "
                              "folder")
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            shown = ", ".join(str(t) for t in existing[:3]) + (f" and {len(existing) - 3} more"
                                                               if len(existing) > 3 else "")
            raise OutputError(f"{len(existing)} {what} file(s) exist already ({shown}); nothing was written. Pass "
                              f"{flag} to replace them, or choose another output location")
    return targets


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(o: Any):
    try:
        import numpy as np    # here, not at the top: `nbseg --help` imports this module (see atomic_torch_save)

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")
