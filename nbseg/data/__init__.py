"""Segmentation datasets behind one contract: :func:`load_dataset` returns a :class:`SegDataset` of
:class:`SegSample` (image (3, H, W) in [0, 1], label (H, W) int64 with 255 = ignore, or None).

Registered names: ``world`` (the embedded synthetic world), ``voc``, ``cocostuff27``, ``cityscapes27``,
``potsdam``, ``potsdam3`` and ``folder`` (bring your own images and masks). ``nbseg data check NAME ROOT``
validates a root from the command line (:mod:`nbseg.data.check`).
"""
from __future__ import annotations

from pathlib import Path

from nbseg.data.base import (IGNORE_INDEX, CenterCrop, Compose, Resize, ResizeSquare, SegDataset, SegSample,
                             collate_samples, read_image, read_label)
from nbseg.data.cityscapes import Cityscapes27
from nbseg.data.cocostuff import CocoStuff27
from nbseg.data.folder import FolderDataset
from nbseg.data.potsdam import Potsdam
from nbseg.data.voc import VOCDataset
from nbseg.data.world import WorldDataset
from nbseg.errors import DataError

# name -> (dataset class, fixed keyword arguments)
DATASETS: dict[str, tuple[type[SegDataset], dict]] = {
    "world": (WorldDataset, {}),
    "voc": (VOCDataset, {}),
    "cocostuff27": (CocoStuff27, {}),
    "cityscapes27": (Cityscapes27, {}),
    "potsdam": (Potsdam, {"coarse": False}),
    "potsdam3": (Potsdam, {"coarse": True}),
    "folder": (FolderDataset, {}),
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def _entry(name: str, root: str | Path | None) -> tuple[type[SegDataset], dict]:
    """The registry entry of ``name``, after checking that a root is given where one is needed."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}. Fix: use one of {dataset_names()}.")
    cls, fixed = DATASETS[name]
    if root is None and cls is not WorldDataset:
        raise DataError(f"dataset {name!r} needs a root folder. Fix: load_dataset({name!r}, root=PATH).")
    return cls, fixed


def load_dataset(name: str, root: str | Path | None = None, split: str = "val", **kwargs) -> SegDataset:
    """Open dataset ``name`` at ``root`` (only ``world`` has a default root) for ``split``.

    ``kwargs`` go to the dataset class: ``transform`` for all, ``labels`` for world, ``list_file`` / ``curated``
    for cocostuff27, ``masks_dir`` / ``num_classes`` / ``class_names`` for folder.
    """
    cls, fixed = _entry(name, root)
    return cls(root, split, **fixed, **kwargs)


def available_splits(name: str, root: str | Path | None) -> list[str]:
    """The splits of dataset ``name`` present under ``root`` (``world``: None = default root)."""
    cls, _ = _entry(name, root)
    return cls.splits(root)


__all__ = [
    "IGNORE_INDEX", "SegSample", "SegDataset", "Resize", "ResizeSquare", "CenterCrop", "Compose",
    "collate_samples", "read_image", "read_label", "load_dataset", "dataset_names", "available_splits",
    "DATASETS", "VOCDataset", "WorldDataset", "CocoStuff27", "Cityscapes27", "Potsdam", "FolderDataset",
]
