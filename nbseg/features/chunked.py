"""Derived per-image arrays (fp16, on disk, keyed like the feature cache), computed in resumable chunks.

Why: some methods derive more from a frozen backbone than :mod:`nbseg.features.cache` stores (TransFGU's crop bank
of CLS features, its Grad-CAM pseudo-label bank). They are as expensive as the feature cache and must survive an
interruption the same way, so they live beside it: ``<cache root>/<readable>_<hash of the key>/`` with

* ``<name>.npy`` fp16 arrays whose first axis is the image index, read back memory-mapped;
* ``manifest.json`` (written last, atomically): the key, the shapes and the arrays' sha256.

A build writes ``<name>.partial.npy`` chunk by chunk and records the chunks done in ``progress.json`` (atomic), so a
killed build run again with the same key goes on from the first chunk not recorded; a changed key is a new folder.
The key is the caller's dict (for a dataset, start from :func:`nbseg.features.cache.cache_key`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from nbseg.features.cache import DEFAULT_ROOT, CacheError
from nbseg.io import atomic_write_json, sha256_file
from nbseg.progress import tqdm

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
DTYPE = np.float16


def store_dir(key: dict, readable: str, root: str | Path | None = None) -> Path:
    """``<root>/<readable>_<12 hex of sha256(key)>`` (root: the feature cache's default root)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    readable = "".join(c if c.isalnum() or c in "-._" else "-" for c in readable)
    return Path(DEFAULT_ROOT if root is None else root) / f"{readable}_{digest}"


def open_arrays(path: Path, key: dict | None = None) -> dict[str, np.ndarray]:
    """The finished arrays of the store at ``path`` (memory-mapped, read-only); ``key`` must match when given."""
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise CacheError(f"array store {path} is not finished (no {MANIFEST}); run its build again to finish it")
    manifest = json.loads(manifest_file.read_text())
    if key is not None and manifest["key"] != json.loads(json.dumps(key, default=str)):
        raise CacheError(f"array store {path} holds another key. Fix: delete the folder {path} and build it again")
    arrays = {}
    for name, shape in manifest["shapes"].items():
        file = path / f"{name}.npy"
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CacheError(f"{file} is missing or damaged ({err}). Fix: delete the folder {path} and build it "
                             "again") from err
        if tuple(array.shape) != tuple(shape):
            raise CacheError(f"{file} holds {tuple(array.shape)}, the manifest says {tuple(shape)}. Fix: delete "
                             f"the folder {path} and build it again")
        arrays[name] = array
    return arrays


def build_arrays(path: Path, key: dict, shapes: Mapping[str, tuple[int, ...]],
                 compute: Callable[[int, int], Mapping[str, np.ndarray]], *, chunk_size: int = 32,
                 progress: bool = True, desc: str = "building", on_chunk: Callable[[int], None] | None = None
                 ) -> dict[str, np.ndarray]:
    """Open the store at ``path``, or build / finish it: ``compute(start, stop)`` returns the rows
    ``[start, stop)`` of every array in ``shapes`` (first axis = items, the same for all). Returns the arrays."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return open_arrays(path, key)
    jkey = json.loads(json.dumps(key, default=str))
    jshapes = {k: [int(s) for s in v] for k, v in shapes.items()}
    n = {v[0] for v in jshapes.values()}
    if len(n) != 1:
        raise ValueError(f"arrays of one store share their first axis, got shapes {jshapes}")
    n = n.pop()
    path.mkdir(parents=True, exist_ok=True)
    done = 0
    try:
        state = json.loads((path / PROGRESS).read_text())
        if state.get("key") == jkey and state.get("shapes") == jshapes and state.get("chunk_size") == chunk_size \
                and all((path / f"{k}.partial.npy").is_file() for k in shapes):
            done = int(state["chunks_done"])
    except (OSError, json.JSONDecodeError, KeyError):
        done = 0
    arrays = {k: np.lib.format.open_memmap(path / f"{k}.partial.npy", mode="r+" if done else "w+", dtype=DTYPE,
                                           shape=tuple(v)) for k, v in jshapes.items()}
    n_chunks = -(-n // chunk_size)
    bar = tqdm(total=n_chunks, initial=done, unit="chunk", desc=desc, disable=not progress)
    try:
        for chunk in range(done, n_chunks):
            start, stop = chunk * chunk_size, min(n, (chunk + 1) * chunk_size)
            rows = compute(start, stop)
            for name, array in arrays.items():
                array[start:stop] = np.asarray(rows[name], dtype=np.float32).astype(DTYPE)
                array.flush()
            atomic_write_json(path / PROGRESS, {"key": jkey, "shapes": jshapes, "chunk_size": chunk_size,
                                                "chunks_done": chunk + 1})
            bar.update()
            if on_chunk is not None:
                on_chunk(chunk + 1)
    finally:
        bar.close()
        del arrays
    for name in shapes:
        os.replace(path / f"{name}.partial.npy", path / f"{name}.npy")
    atomic_write_json(path / MANIFEST, {"key": jkey, "shapes": jshapes, "dtype": "float16",
                                        "sha256": {k: sha256_file(path / f"{k}.npy") for k in shapes}})
    (path / PROGRESS).unlink(missing_ok=True)
    return open_arrays(path, key)


def store_bytes(path: Path) -> int:
    """Bytes of a finished store's arrays on disk."""
    return sum((Path(path) / f).stat().st_size for f in os.listdir(path) if f.endswith(".npy"))


__all__ = ["store_dir", "open_arrays", "build_arrays", "store_bytes"]
