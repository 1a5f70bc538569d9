"""ISPRS Potsdam as prepared by IIC: 200x200 RGBIR tiles in MATLAB files, 6 classes or 3 coarse groups.

Layout under ``root``::

    imgs/<id>.mat       key "img": (H, W, 4) RGBIR, uint8 or float 0..255; only RGB is used
    gt/<id>.mat         key "gt": (H, W) class ids 0..5 (255 = ignore)
    labelled_train.txt  unlabelled_train.txt  labelled_test.txt  [all.txt]

Splits: ``train`` (labelled_train), ``unlabelled_train``, ``val`` / ``test`` (labelled_test, IIC's 855 tiles) and
``all`` (all.txt, else the union of the three lists). Labelled splits require a gt file for every id; for the
others a label is returned where a gt file exists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.io import loadmat

from nbseg.data.base import SegDataset, Transform, label_lut, read_id_list, require_dir
from nbseg.errors import DataError

POTSDAM_CLASSES = ["impervious surface", "building", "low vegetation", "tree", "car", "clutter"]
POTSDAM3_CLASSES = ["roads and cars", "buildings and clutter", "vegetation"]
# IIC's coarse grouping: {road, car} -> 0, {building, clutter} -> 1, {low vegetation, tree} -> 2.
POTSDAM6_TO_3 = [0, 1, 2, 2, 0, 1]

SPLIT_LISTS = {"train": ["labelled_train.txt"], "unlabelled_train": ["unlabelled_train.txt"],
               "val": ["labelled_test.txt"], "test": ["labelled_test.txt"],
               "all": ["labelled_train.txt", "unlabelled_train.txt", "labelled_test.txt"]}
LABELLED_SPLITS = ("train", "val", "test")


class Potsdam(SegDataset):
    """Potsdam with 6 classes, or the 3 coarse groups with ``coarse=True`` (registered as ``potsdam3``)."""

    name = "potsdam"
    label_hint = "IIC's Potsdam gt holds 0..5 (road, building, low vegetation, tree, car, clutter) and 255"

    def __init__(self, root: str | Path, split: str = "val", transform: Transform | None = None, *,
                 coarse: bool = False):
        root = require_dir(Path(root), "Potsdam root", "pass the IIC-prepared folder holding imgs/, gt/ and the "
                                                       "labelled_*.txt split files")
        if split not in SPLIT_LISTS:
            raise DataError(f"unknown Potsdam split {split!r}. Fix: use one of {list(SPLIT_LISTS)}.")
        if split == "all" and (root / "all.txt").is_file():
            ids = read_id_list(root / "all.txt")
        else:
            ids = []
            for list_name in SPLIT_LISTS[split]:
                ids += read_id_list(root / list_name, f"copy IIC's split files into {root}, or use a split "
                                                      f"among {self.splits(root)}")
        self.name = "potsdam3" if coarse else "potsdam"
        super().__init__(root, split, ids, POTSDAM3_CLASSES if coarse else POTSDAM_CLASSES, transform=transform,
                         label_lut=label_lut(POTSDAM6_TO_3) if coarse else None,
                         label_set="3 coarse classes" if coarse else "6 classes")

    @classmethod
    def splits(cls, root: str | Path) -> list[str]:
        root = Path(root)
        return [s for s in ("train", "unlabelled_train", "val")
                if all((root / f).is_file() for f in SPLIT_LISTS[s])]

    def image_path(self, i: int) -> Path:
        return self.root / "imgs" / f"{self.ids[i]}.mat"

    def label_path(self, i: int) -> Path | None:
        path = self.root / "gt" / f"{self.ids[i]}.mat"
        if self.split in LABELLED_SPLITS or path.is_file():
            return path
        return None

    def read_image(self, path: Path) -> torch.Tensor:
        """RGB of the RGBIR tile as (3, H, W) in [0, 1]. Values are 0..255 (uint8 or float); a float tile whose
        maximum is <= 1 is taken as already scaled."""
        rgbir = _load_mat_array(path, "img", "image tile")
        if rgbir.ndim != 3 or rgbir.shape[2] < 3:
            raise DataError(f"image tile {path} has shape {rgbir.shape}, expected (H, W, 4) RGBIR. Fix: use IIC's "
                            f"prepared Potsdam .mat files.")
        rgb = rgbir[:, :, :3].astype(np.float32)
        if rgbir.dtype == np.uint8 or rgb.max() > 1.0:
            rgb /= 255.0
        return torch.from_numpy(np.clip(rgb, 0.0, 1.0)).permute(2, 0, 1).contiguous()

    def read_label(self, path: Path) -> torch.Tensor:
        gt = _load_mat_array(path, "gt", "label tile")
        gt = np.squeeze(gt)
        if gt.ndim != 2:
            raise DataError(f"label tile {path} has shape {gt.shape}, expected (H, W). Fix: use IIC's prepared "
                            f"Potsdam .mat files.")
        return torch.from_numpy(gt.astype(np.int64))


def _load_mat_array(path: Path, key: str, what: str) -> np.ndarray:
    """Array ``key`` of a MATLAB file, every failure a DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{what} {path} is listed but missing. Fix: restore the file, or remove its id from the "
                        f"split list.")
    try:
        content = loadmat(str(path))
    except Exception as err:  # scipy raises many unrelated types (MatReadError, ValueError, struct.error, ...)
        raise DataError(f"{what} {path} cannot be read as a MATLAB file ({type(err).__name__}: {err}). Fix: the "
                        f"file is corrupt; re-extract it.") from err
    if key not in content:
        keys = [k for k in content if not k.startswith("__")]
        raise DataError(f"{what} {path} has no {key!r} array (keys: {keys}). Fix: use IIC's prepared Potsdam files.")
    return np.asarray(content[key])
