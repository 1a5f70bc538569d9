"""PASCAL VOC 2012 segmentation (21 classes, 255 = ignore), and the reader the embedded world reuses.

Layout under ``root`` (the ``VOC2012`` folder; a ``VOCdevkit`` parent is also accepted)::

    JPEGImages/<id>.jpg                      (.png accepted: the embedded world writes lossless PNG)
    SegmentationClass/<id>.png               palette PNG, read as indices
    ImageSets/Segmentation/{train,val}.txt
    SegmentationClassAug/<id>.png            split "trainaug" (SBD-augmented, 10,582 images)
    ImageSets/Segmentation/trainaug.txt      or ImageSets/SegmentationAug/train_aug.txt
"""
from __future__ import annotations

from pathlib import Path

from nbseg.data.base import SegDataset, Transform, find_file, read_id_list, require_dir
from nbseg.errors import DataError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
# Where the usual trainaug lists live, first match wins.
TRAINAUG_LISTS = ("ImageSets/Segmentation/trainaug.txt", "ImageSets/SegmentationAug/train_aug.txt",
                  "ImageSets/Segmentation/train_aug.txt", "ImageSets/SegmentationAug/trainaug.txt")


class VOCDataset(SegDataset):
    """PASCAL VOC layout reader; ``label_dir``, ``class_names`` and ``label_lut`` let other datasets in the same
    layout (the embedded world) reuse it unchanged."""

    name = "voc"
    label_hint = ("VOC label maps are palette or grey PNGs holding 0..20 and 255 (ignore); SegmentationClassAug "
                  "must be the grey-index version, not a colour rendering")

    def __init__(self, root: str | Path, split: str = "val", transform: Transform | None = None, *,
                 label_dir: str | None = None, class_names: list[str] | None = None, label_lut=None,
                 label_set: str | None = None):
        root = resolve_voc_root(Path(root))
        list_file = self.split_file(root, split)
        fix = (f"pass split 'train' or 'val', or add {root}/{TRAINAUG_LISTS[0]} (one id per line)"
               if split == "trainaug" else f"use a split among {self.splits(root) or ['train', 'val']}")
        ids = read_id_list(list_file, fix)
        super().__init__(root, split, ids, class_names or VOC_CLASSES, transform=transform,
                         label_lut=label_lut, label_set=label_set)
        self.image_dir = root / "JPEGImages"
        self.label_dir = root / (label_dir or ("SegmentationClassAug" if split == "trainaug"
                                               else "SegmentationClass"))

    @staticmethod
    def split_file(root: Path, split: str) -> Path:
        """The id list of ``split`` (the first existing trainaug location for "trainaug")."""
        if split == "trainaug":
            found = [root / rel for rel in TRAINAUG_LISTS if (root / rel).is_file()]
            return found[0] if found else root / TRAINAUG_LISTS[0]
        return root / "ImageSets" / "Segmentation" / f"{split}.txt"

    @classmethod
    def splits(cls, root: str | Path) -> list[str]:
        """Splits whose id list exists under ``root``."""
        root = resolve_voc_root(Path(root))
        return [s for s in ("train", "val", "trainaug") if cls.split_file(root, s).is_file()]

    def image_path(self, i: int) -> Path:
        return find_file(self.image_dir, self.ids[i], IMAGE_SUFFIXES, "image")

    def label_path(self, i: int) -> Path:
        return self.label_dir / f"{self.ids[i]}.png"


def resolve_voc_root(root: Path) -> Path:
    """``root`` itself when it holds ``JPEGImages``; else its ``VOC2012`` or ``VOCdevkit/VOC2012`` child."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    fix = "pass the VOC2012 folder (the one holding JPEGImages/, SegmentationClass/ and ImageSets/)"
    require_dir(root, "VOC root", fix)
    raise DataError(f"VOC root {root} has no JPEGImages/ folder. Fix: {fix}.")
