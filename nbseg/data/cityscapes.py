"""Cityscapes-27 (STEGO's convention): the 27 labelIds 7..33 as classes 0..26, everything else ignored.

These are *labelIds*, not the 19 trainIds: the ignoreInEval classes (parking, rail track, guard rail, bridge,
tunnel, polegroup, caravan, trailer) are classes here. Layout under ``root``::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
"""
from __future__ import annotations

from pathlib import Path

import torch

from nbseg.data.base import IGNORE_INDEX, SegDataset, Transform, require_dir
from nbseg.errors import DataError

CITYSCAPES27_CLASSES = [
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel",
    "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
]
FIRST_LABEL_ID = 7   # labelIds 0..6 are void (unlabeled, ego vehicle, rectification border, ...)
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def labelid_lut() -> torch.Tensor:
    """(256,) labelId -> class: 7..33 -> 0..26, every other value (void ids, 255) -> ignore; no value is an error,
    since labelIds PNGs legitimately hold any void id."""
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    lut[FIRST_LABEL_ID:FIRST_LABEL_ID + len(CITYSCAPES27_CLASSES)] = torch.arange(len(CITYSCAPES27_CLASSES))
    return lut


class Cityscapes27(SegDataset):
    """Cityscapes fine annotations as 27 classes; ids are ``<city>_<seq>_<frame>`` sorted by city then frame."""

    name = "cityscapes27"
    label_hint = "use the *_gtFine_labelIds.png files (labelIds 0..33), not labelTrainIds or color"

    def __init__(self, root: str | Path, split: str = "val", transform: Transform | None = None):
        root = require_dir(Path(root), "Cityscapes root", "pass the folder holding leftImg8bit/ and gtFine/")
        image_dir = root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise DataError(f"Cityscapes split folder {image_dir} is missing. Fix: use a split among "
                            f"{self.splits(root) or ['train', 'val']}, or extract leftImg8bit_trainvaltest.zip "
                            f"into {root}.")
        self.image_files = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.image_files:
            raise DataError(f"no *{IMAGE_SUFFIX} images under {image_dir}/<city>/. Fix: extract "
                            f"leftImg8bit_trainvaltest.zip into {root}.")
        self.label_dir = root / "gtFine" / split
        ids = [p.name[: -len(IMAGE_SUFFIX)] for p in self.image_files]
        super().__init__(root, split, ids, CITYSCAPES27_CLASSES, transform=transform, label_lut=labelid_lut(),
                         label_set="27 classes")

    @classmethod
    def splits(cls, root: str | Path) -> list[str]:
        return [s for s in ("train", "val") if (Path(root) / "leftImg8bit" / s).is_dir()]

    def image_path(self, i: int) -> Path:
        return self.image_files[i]

    def label_path(self, i: int) -> Path:
        city = self.image_files[i].parent.name
        return self.label_dir / city / f"{self.ids[i]}{LABEL_SUFFIX}"
