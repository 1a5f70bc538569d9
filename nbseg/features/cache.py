"""Frozen-backbone features computed once and read back from disk: the feature cache every head-training method
can share (DCN first).

Why: a frozen backbone gives the same patch tokens every epoch, so running it again each epoch only burns time (on a
CPU the backbone is most of an epoch). :func:`build_feature_cache` runs it once over a dataset split and writes, as
fp16 ``.npy`` arrays read back memory-mapped:

* ``patches.npy`` (N, h, w, D): last block output after the final norm (:class:`nbseg.backbones.Features`);
* ``cls.npy`` (N, D): the CLS token;
* ``attn.npy`` (N, heads, h, w): the last block's CLS -> patch attention per head (DCN's foreground detection);
* ``manifest.json``: the key below, the shapes, the image ids, the backbone's description and the arrays' sha256.

The key. A cache lives in ``<root>/<readable name>_<hash>/`` (``root`` defaults to ``artifacts/feature_cache`` in the
checkout that holds the package, whatever the working directory: notebooks run from ``notebooks/``), the hash taken
over: the backbone name; its weights sha256 (``random_init:<sha256 of the random state dict>`` for a
random-init backbone, which identifies the seed); the input size the images are resized to; the dataset's name,
resolved root, split, label set and transform; the number of images, a hash of their ids and one of their files'
sizes. Change any of these and :func:`build_feature_cache` builds a new cache in a new folder (the old one is left
where it is; delete it when it is no longer needed).

Interruptions. The arrays are first written as ``*.partial.npy`` files, one chunk of ``chunk_size`` images at a
time; after each chunk the arrays are flushed and ``progress.json`` is replaced atomically with the number of chunks
done. A build that is interrupted (Ctrl-C, a crash, a killed job) and started again with the same arguments goes on
from the first chunk not recorded there. The last step renames the partial files and writes ``manifest.json``
atomically, so a cache without a manifest is never read.

Reading. :class:`FeatureCache` opens a finished cache and checks every array against the manifest (present, header
readable, shape and dtype, file long enough); a truncated or damaged file is a :class:`CacheError` that names the
file and the fix (delete the folder or pass ``rebuild=True``). ``verify=True`` also compares the arrays' sha256.
:class:`CachedFeatureDataset` follows the training loop's data contract (``dataset[(index, seed)]``, see
:mod:`nbseg.train.loop`) and yields ``{"index", "patches", ...}`` dicts that the default collate stacks.

Length: just over 400 lines: building, resuming and reading the cache share its on-disk format, kept in one place.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from nbseg.backbones import Features
from nbseg.data.base import resize_pair
from nbseg.errors import DataError
from nbseg.io import atomic_write_json, sha256_file
from nbseg.progress import tqdm

FORMAT = 1
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "artifacts" / "feature_cache"   # the checkout's artifacts/
FIELDS = ("patches", "cls", "attn")
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
DTYPE = np.float16


class CacheError(DataError):
    """A feature cache that cannot be used as it is (missing, truncated or damaged file, other key)."""


# ----------------------------------------------------------------------------------------------------------
# The key
# ----------------------------------------------------------------------------------------------------------

def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def weights_id(backbone) -> str:
    """What identifies a backbone's weights: the sha256 of its weights (of the file, or of the state dict for hub
    weights), prefixed ``random_init:`` for a random-init backbone (the state-dict hash then identifies the seed)."""
    return f"random_init:{backbone.weights_sha256}" if backbone.random_init else backbone.weights_sha256


def dataset_identity(dataset, n_images: int) -> dict:
    """The fields of the key that describe the data: name, resolved root, split, label set, transform, and hashes of
    the first ``n_images`` ids and of their image files' sizes (a regenerated or edited split gets a new key)."""
    ids = list(dataset.ids[:n_images])
    sizes = []
    image_path = getattr(dataset, "image_path", None)
    if callable(image_path):
        for i in range(n_images):
            try:
                sizes.append(os.stat(image_path(i)).st_size)
            except (OSError, NotImplementedError):
                sizes.append(-1)
    transform = getattr(dataset, "transform", None)
    return {"dataset": getattr(dataset, "name", type(dataset).__name__),
            "root": str(Path(dataset.root).resolve()) if getattr(dataset, "root", None) is not None else None,
            "split": getattr(dataset, "split", None), "labels": getattr(dataset, "labels", None),
            "transform": None if transform is None else repr(transform), "n_images": n_images,
            "ids_sha256": _sha("\n".join(ids)), "files_sha256": _sha(",".join(map(str, sizes)))}


def cache_key(backbone, dataset, input_size: int | Sequence[int], limit: int | None = None) -> dict:
    """The full key of the cache of ``backbone`` over ``dataset`` (first ``limit`` images) at ``input_size``."""
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    return {"format": FORMAT, "backbone": backbone.name, "weights": weights_id(backbone),
            "input_size": list(_pair(input_size)), **dataset_identity(dataset, n)}


def cache_dir(key: dict, root: str | Path | None = None) -> Path:
    """``<root>/<backbone>_<dataset>_<split>_<H>x<W>_<hash of the key>``."""
    digest = _sha(json.dumps(key, sort_keys=True))[:12]
    h, w = key["input_size"]
    readable = f"{key['backbone']}_{key['dataset']}_{key['split']}_{h}x{w}"
    readable = "".join(c if c.isalnum() or c in "-._" else "-" for c in readable)
    return Path(DEFAULT_ROOT if root is None else root) / f"{readable}_{digest}"


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

def _fix(path: Path) -> str:
    return (f"Fix: delete the folder {path} (or call build_feature_cache(..., rebuild=True)) and build the cache "
            f"again")


def _open_array(file: Path, shape: Sequence[int], cache_path: Path) -> np.ndarray:
    """Memory-map one cache array and check it against the manifest; a CacheError naming the file otherwise."""
    if not file.is_file():
        raise CacheError(f"feature cache file {file} is missing. {_fix(cache_path)}")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CacheError(f"feature cache file {file} is truncated or damaged ({type(err).__name__}: {err}). "
                         f"{_fix(cache_path)}") from err
    if tuple(array.shape) != tuple(shape) or array.dtype != DTYPE:
        raise CacheError(f"feature cache file {file} holds {array.dtype} {tuple(array.shape)} but the manifest says "
                         f"float16 {tuple(shape)}. {_fix(cache_path)}")
    return array


class FeatureCache:
    """A finished feature cache, memory-mapped.

    Attributes: ``path``, ``manifest`` (dict), ``key``, ``ids``, ``grid`` (h, w), ``dim`` (D), ``num_heads``,
    ``input_size`` (H, W), and the arrays ``patches`` (N, h, w, D), ``cls`` (N, D), ``attn`` (N, heads, h, w) as
    read-only float16 memory maps (opened on first use, so the object pickles cheaply into DataLoader workers).
    """

    def __init__(self, path: str | Path, *, verify: bool = False):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            state = "is being built or was interrupted" if (self.path / PROGRESS).is_file() else "does not exist"
            raise CacheError(f"feature cache {self.path} {state} (no {MANIFEST}). Fix: run build_feature_cache with "
                             f"the same backbone, dataset and input size to build or finish it")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CacheError(f"feature cache manifest {manifest_path} cannot be read ({err}). "
                             f"{_fix(self.path)}") from err
        if self.manifest.get("format") != FORMAT:
            raise CacheError(f"feature cache {self.path} has format {self.manifest.get('format')}, this nbseg reads "
                             f"format {FORMAT}. {_fix(self.path)}")
        self._arrays: dict[str, np.ndarray] = {}
        for name in FIELDS:                      # check every file now: errors surface at open, not mid-epoch
            self._array(name)
        if verify:
            self.verify()
        self._arrays = {}

    # ---- what it holds -----------------------------------------------------------------------------------
    @property
    def key(self) -> dict:
        return self.manifest["key"]

    @property
    def ids(self) -> list[str]:
        return self.manifest["ids"]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.manifest["shapes"]["patches"][1:3])

    @property
    def dim(self) -> int:
        return int(self.manifest["shapes"]["patches"][3])

    @property
    def num_heads(self) -> int:
        return int(self.manifest["shapes"]["attn"][1])

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.key["input_size"])

    def __len__(self) -> int:
        return int(self.manifest["shapes"]["patches"][0])

    def describe(self) -> str:
        """One line for titles: backbone, weights, data and size."""
        k = self.key
        return (f"{self.manifest['backbone_description']} on {k['dataset']}/{k['split']} "
                f"({k['labels'] or ''} {len(self)} images at {k['input_size'][0]}x{k['input_size'][1]}, cached fp16)")

    # ---- arrays ------------------------------------------------------------------------------------------
    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = _open_array(self.path / f"{name}.npy", self.manifest["shapes"][name], self.path)
        return self._arrays[name]

    @property
    def patches(self) -> np.ndarray:
        return self._array("patches")

    @property
    def cls(self) -> np.ndarray:
        return self._array("cls")

    @property
    def attn(self) -> np.ndarray:
        return self._array("attn")

    def features(self, index=slice(None), device: str | torch.device = "cpu"):
        """:class:`nbseg.backbones.Features` (float32) of the images ``index`` (an int, slice or index array)."""
        def get(a):
            return torch.from_numpy(np.asarray(a[index], dtype=np.float32)).to(device)
        return Features(patches=get(self.patches), cls=get(self.cls), attn=get(self.attn))

    def verify(self) -> None:
        """Compare each array file's sha256 with the manifest's (reads every byte)."""
        for name in FIELDS:
            file = self.path / f"{name}.npy"
            if sha256_file(file) != self.manifest["sha256"][name]:
                raise CacheError(f"feature cache file {file} does not match the sha256 in its manifest (damaged or "
                                 f"replaced). {_fix(self.path)}")

    def dataset(self, fields: Sequence[str] = ("patches",)) -> "CachedFeatureDataset":
        return CachedFeatureDataset(self, fields)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __repr__(self) -> str:
        return f"<FeatureCache {self.describe()} at {self.path}>"


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Items of a :class:`FeatureCache` for :func:`nbseg.train.fit`: ``dataset[(index, seed)]`` (or
    ``dataset[index]``) -> ``{"index": int, "patches": (h, w, D), ...}`` float32 tensors for ``fields`` (any of
    ``patches``, ``cls``, ``attn``). The seed is accepted and unused: cached features are not augmented."""

    def __init__(self, cache: FeatureCache, fields: Sequence[str] = ("patches",)):
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown cache fields {unknown}; use any of {FIELDS}")
        self.cache = cache
        self.fields = tuple(fields)
        self.name = f"{cache.key['dataset']}/{cache.key['split']} (cached features)"

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, item) -> dict:
        index = int(item[0] if isinstance(item, (tuple, list)) else item)
        out = {"index": index}
        for name in self.fields:
            out[name] = torch.from_numpy(np.asarray(self.cache._array(name)[index], dtype=np.float32))
        return out

    def describe(self) -> str:
        return self.cache.describe()


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------

@dataclass
class _Partial:
    """The arrays of a build in progress: ``<name>.partial.npy`` opened read-write."""

    path: Path
    shapes: dict[str, tuple[int, ...]]

    def file(self, name: str) -> Path:
        return self.path / f"{name}.partial.npy"

    def open(self, create: bool) -> dict[str, np.ndarray]:
        mode = "w+" if create else "r+"
        return {name: np.lib.format.open_memmap(self.file(name), mode=mode, dtype=DTYPE, shape=self.shapes[name])
                for name in FIELDS}


def _read_progress(path: Path, key: dict, shapes: dict) -> int:
    """Chunks already written by an interrupted build of the same key (0 when there is none or it does not fit)."""
    try:
        progress = json.loads((path / PROGRESS).read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    if progress.get("key") != key or progress.get("shapes") != {k: list(v) for k, v in shapes.items()}:
        return 0
    partial = _Partial(path, shapes)
    try:
        for name in FIELDS:
            _open_array(partial.file(name), shapes[name], path)
    except CacheError:
        return 0
    return int(progress.get("chunks_done", 0))


def _load_images(dataset, indices: range, size: tuple[int, int]) -> torch.Tensor:
    return torch.stack([resize_pair(dataset[i].image, None, size)[0] for i in indices])


def build_feature_cache(backbone, dataset, input_size: int | Sequence[int], *, root: str | Path | None = None,
                        limit: int | None = None, chunk_size: int = 64, rebuild: bool = False,
                        progress: bool = True, on_chunk: Callable[[int], None] | None = None,
                        verify: bool = False) -> FeatureCache:
    """Open the cache of ``backbone`` over ``dataset`` at ``input_size``, building (or finishing) it if needed.

    Args:
        backbone: a frozen :class:`nbseg.backbones.Backbone`.
        dataset: a :class:`nbseg.data.SegDataset` (anything with ``ids``, ``__getitem__ -> SegSample``).
        input_size: int or (H, W): every image is resized (bilinear, antialiased) to this size, a multiple of the
            patch size, before the backbone sees it.
        root: the cache root (default :data:`DEFAULT_ROOT`: ``artifacts/feature_cache`` in the checkout).
        limit: cache only the first ``limit`` images (smoke runs; part of the key).
        chunk_size: images per backbone batch and per resumable chunk.
        rebuild: delete an existing cache (finished or partial) of this key first.
        on_chunk: called with the number of chunks done after each chunk is committed (progress hooks, tests).
        verify: check the sha256 of an existing cache's arrays on open.
    Returns:
        the opened :class:`FeatureCache`.
    """
    size = _pair(input_size)
    p = backbone.patch_size
    if size[0] % p or size[1] % p:
        raise ValueError(f"input size {size[0]}x{size[1]} is not a multiple of the backbone's patch size {p}: use "
                         f"{size[0] // p * p}x{size[1] // p * p}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    key = cache_key(backbone, dataset, size, limit)
    path = cache_dir(key, root)
    if rebuild and path.exists():
        shutil.rmtree(path)
    if (path / MANIFEST).is_file():
        cache = FeatureCache(path, verify=verify)
        if cache.key != key:
            raise CacheError(f"feature cache {path} was built for another key ({cache.key}). {_fix(path)}")
        return cache
    n = key["n_images"]
    if n == 0:
        raise DataError(f"{getattr(dataset, 'name', 'dataset')} has no images to cache")
    h, w = size[0] // p, size[1] // p
    shapes = {"patches": (n, h, w, backbone.dim), "cls": (n, backbone.dim), "attn": (n, backbone.num_heads, h, w)}
    path.mkdir(parents=True, exist_ok=True)
    n_chunks = -(-n // chunk_size)
    done = _read_progress(path, key, shapes)
    partial = _Partial(path, shapes)
    arrays = partial.open(create=done == 0)
    bar = tqdm(total=n_chunks, initial=done, unit="chunk", disable=not progress,
               desc=f"caching {backbone.name} on {key['dataset']}/{key['split']}")
    try:
        for chunk in range(done, n_chunks):
            indices = range(chunk * chunk_size, min(n, (chunk + 1) * chunk_size))
            feats = backbone.extract(_load_images(dataset, indices, size))
            sl = slice(indices.start, indices.stop)
            arrays["patches"][sl] = feats.patches.cpu().numpy().astype(DTYPE)
            arrays["cls"][sl] = feats.cls.cpu().numpy().astype(DTYPE)
            arrays["attn"][sl] = feats.attn.cpu().numpy().astype(DTYPE)
            for array in arrays.values():
                array.flush()
            atomic_write_json(path / PROGRESS, {"key": key, "shapes": {k: list(v) for k, v in shapes.items()},
                                                "chunks_done": chunk + 1, "chunk_size": chunk_size})
            bar.update()
            if on_chunk is not None:
                on_chunk(chunk + 1)
    finally:
        bar.close()
        del arrays
    return _finish(path, partial, key, shapes, backbone, dataset)


def _finish(path: Path, partial: _Partial, key: dict, shapes: dict, backbone, dataset) -> FeatureCache:
    """Rename the partial arrays into place and write the manifest last (idempotent after a crash in between)."""
    for name in FIELDS:
        if partial.file(name).is_file():
            os.replace(partial.file(name), path / f"{name}.npy")
    manifest = {"format": FORMAT, "key": key, "shapes": {k: list(v) for k, v in shapes.items()},
                "dtype": "float16", "ids": list(dataset.ids[:key["n_images"]]),
                "backbone_description": backbone.describe(), "patch_size": backbone.patch_size,
                "sha256": {name: sha256_file(path / f"{name}.npy") for name in FIELDS}}
    atomic_write_json(path / MANIFEST, manifest)
    (path / PROGRESS).unlink(missing_ok=True)
    return FeatureCache(path)


__all__ = ["FeatureCache", "CachedFeatureDataset", "CacheError", "build_feature_cache", "cache_key", "cache_dir",
           "weights_id", "DEFAULT_ROOT"]
