"""COCO-Stuff-27, curated (the IIC / STEGO layout and lists).

Layout under ``root``::

    images/{train2017,val2017}/<id>.jpg
    annotations/{train2017,val2017}/<id>.png        fine label = COCO-Stuff id - 1 (0..181), 255 = unlabelled
    curated/train2017/Coco164kFull_Stuff_Coarse.txt     train list (49,629 ids)
    curated/val2017/Coco164kFull_Stuff_Coarse_7.txt     val list: IIC's curated subset 7 (2,175 ids)

The 182 fine ids map to 27 coarse classes through COCO-Stuff's category -> supercategory table, written below as
data: things 0..11 (the 12 COCO thing supercategories), stuff 12..26 (the 15 stuff supercategories). The 11 thing
ids COCO defines but never annotates map to ignore.
"""
from __future__ import annotations

from pathlib import Path

from nbseg.data.base import IGNORE_INDEX, SegDataset, Transform, label_lut, read_id_list, require_dir
from nbseg.errors import DataError

THING_COARSE = ["electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal",
                "outdoor", "person", "sports", "vehicle"]
# COCO-Stuff spells the two stuff supercategories that share a thing supercategory's name "food-stuff" and
# "furniture-stuff"; keeping that keeps the 27 names unique (tables are indexed by name).
STUFF_COARSE = ["ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial", "textile", "wall", "window",
                "building", "ground", "plant", "sky", "solid", "structural", "water"]
COARSE_CLASSES = THING_COARSE + STUFF_COARSE
UNUSED = None  # a COCO thing id with no annotations in any release

# (name, supercategory) of COCO-Stuff ids 1..182, in id order; the fine label of the PNGs is the id - 1.
FINE_CLASSES: list[tuple[str, str | None]] = [
    # things, ids 1..91
    ("person", "person"), ("bicycle", "vehicle"), ("car", "vehicle"), ("motorcycle", "vehicle"),
    ("airplane", "vehicle"), ("bus", "vehicle"), ("train", "vehicle"), ("truck", "vehicle"), ("boat", "vehicle"),
    ("traffic light", "outdoor"), ("fire hydrant", "outdoor"), ("street sign", UNUSED), ("stop sign", "outdoor"),
    ("parking meter", "outdoor"), ("bench", "outdoor"), ("bird", "animal"), ("cat", "animal"), ("dog", "animal"),
    ("horse", "animal"), ("sheep", "animal"), ("cow", "animal"), ("elephant", "animal"), ("bear", "animal"),
    ("zebra", "animal"), ("giraffe", "animal"), ("hat", UNUSED), ("backpack", "accessory"),
    ("umbrella", "accessory"), ("shoe", UNUSED), ("eye glasses", UNUSED), ("handbag", "accessory"),
    ("tie", "accessory"), ("suitcase", "accessory"), ("frisbee", "sports"), ("skis", "sports"),
    ("snowboard", "sports"), ("sports ball", "sports"), ("kite", "sports"), ("baseball bat", "sports"),
    ("baseball glove", "sports"), ("skateboard", "sports"), ("surfboard", "sports"), ("tennis racket", "sports"),
    ("bottle", "kitchen"), ("plate", UNUSED), ("wine glass", "kitchen"), ("cup", "kitchen"), ("fork", "kitchen"),
    ("knife", "kitchen"), ("spoon", "kitchen"), ("bowl", "kitchen"), ("banana", "food"), ("apple", "food"),
    ("sandwich", "food"), ("orange", "food"), ("broccoli", "food"), ("carrot", "food"), ("hot dog", "food"),
    ("pizza", "food"), ("donut", "food"), ("cake", "food"), ("chair", "furniture"), ("couch", "furniture"),
    ("potted plant", "furniture"), ("bed", "furniture"), ("mirror", UNUSED), ("dining table", "furniture"),
    ("window", UNUSED), ("desk", UNUSED), ("toilet", "furniture"), ("door", UNUSED), ("tv", "electronic"),
    ("laptop", "electronic"), ("mouse", "electronic"), ("remote", "electronic"), ("keyboard", "electronic"),
    ("cell phone", "electronic"), ("microwave", "appliance"), ("oven", "appliance"), ("toaster", "appliance"),
    ("sink", "appliance"), ("refrigerator", "appliance"), ("blender", UNUSED), ("book", "indoor"),
    ("clock", "indoor"), ("vase", "indoor"), ("scissors", "indoor"), ("teddy bear", "indoor"),
    ("hair drier", "indoor"), ("toothbrush", "indoor"), ("hair brush", UNUSED),
    # stuff, ids 92..182
    ("banner", "textile"), ("blanket", "textile"), ("branch", "plant"), ("bridge", "building"),
    ("building-other", "building"), ("bush", "plant"), ("cabinet", "furniture-stuff"), ("cage", "structural"),
    ("cardboard", "rawmaterial"), ("carpet", "floor"), ("ceiling-other", "ceiling"), ("ceiling-tile", "ceiling"),
    ("cloth", "textile"), ("clothes", "textile"), ("clouds", "sky"), ("counter", "furniture-stuff"),
    ("cupboard", "furniture-stuff"), ("curtain", "textile"), ("desk-stuff", "furniture-stuff"), ("dirt", "ground"),
    ("door-stuff", "furniture-stuff"), ("fence", "structural"), ("floor-marble", "floor"), ("floor-other", "floor"),
    ("floor-stone", "floor"), ("floor-tile", "floor"), ("floor-wood", "floor"), ("flower", "plant"),
    ("fog", "water"), ("food-other", "food-stuff"), ("fruit", "food-stuff"), ("furniture-other", "furniture-stuff"),
    ("grass", "plant"), ("gravel", "ground"), ("ground-other", "ground"), ("hill", "solid"), ("house", "building"),
    ("leaves", "plant"), ("light", "furniture-stuff"), ("mat", "textile"), ("metal", "rawmaterial"),
    ("mirror-stuff", "furniture-stuff"), ("moss", "plant"), ("mountain", "solid"), ("mud", "ground"),
    ("napkin", "textile"), ("net", "structural"), ("paper", "rawmaterial"), ("pavement", "ground"),
    ("pillow", "textile"), ("plant-other", "plant"), ("plastic", "rawmaterial"), ("platform", "ground"),
    ("playingfield", "ground"), ("railing", "structural"), ("railroad", "ground"), ("river", "water"),
    ("road", "ground"), ("rock", "solid"), ("roof", "building"), ("rug", "textile"), ("salad", "food-stuff"),
    ("sand", "ground"), ("sea", "water"), ("shelf", "furniture-stuff"), ("sky-other", "sky"),
    ("skyscraper", "building"), ("snow", "ground"), ("solid-other", "solid"), ("stairs", "furniture-stuff"),
    ("stone", "solid"), ("straw", "plant"), ("structural-other", "structural"), ("table", "furniture-stuff"),
    ("tent", "building"), ("textile-other", "textile"), ("towel", "textile"), ("tree", "plant"),
    ("vegetable", "food-stuff"), ("wall-brick", "wall"), ("wall-concrete", "wall"), ("wall-other", "wall"),
    ("wall-panel", "wall"), ("wall-stone", "wall"), ("wall-tile", "wall"), ("wall-wood", "wall"),
    ("water-other", "water"), ("waterdrops", "water"), ("window-blind", "window"), ("window-other", "window"),
    ("wood", "solid"),
]
NUM_FINE_THINGS = 91
# fine label (0..181) -> coarse class (0..26), or 255 for the unused thing ids.
FINE_TO_COARSE: list[int] = [IGNORE_INDEX if sup is None else COARSE_CLASSES.index(sup)
                             for _, sup in FINE_CLASSES]

SPLIT_FOLDERS = {"train": "train2017", "val": "val2017", "train2017": "train2017", "val2017": "val2017"}
CURATED_LISTS = {"train2017": "Coco164kFull_Stuff_Coarse.txt", "val2017": "Coco164kFull_Stuff_Coarse_7.txt"}


class CocoStuff27(SegDataset):
    """COCO-Stuff with the 27 coarse classes; ``list_file=PATH`` replaces the curated list of the split, and
    ``curated=False`` uses every image of ``images/<split>2017`` instead."""

    name = "cocostuff27"
    label_hint = ("COCO-Stuff label PNGs hold the fine id - 1 (0..181) and 255; use the stuffthingmaps PNGs, "
                  "not colour renderings or the 0-based 171-class remap")

    def __init__(self, root: str | Path, split: str = "val", transform: Transform | None = None, *,
                 list_file: str | Path | None = None, curated: bool = True):
        root = require_dir(Path(root), "COCO-Stuff root",
                           "pass the folder holding images/, annotations/ and curated/ (the STEGO/IIC layout)")
        if split not in SPLIT_FOLDERS:
            raise DataError(f"unknown COCO-Stuff split {split!r}. Fix: use 'train' or 'val'.")
        folder = SPLIT_FOLDERS[split]
        self.image_dir = require_dir(root / "images" / folder, "COCO image folder",
                                     f"extract the COCO {folder} images into {root / 'images' / folder}")
        self.label_dir = root / "annotations" / folder
        if list_file is not None:
            ids = read_id_list(Path(list_file))
        elif curated:
            ids = read_id_list(root / "curated" / folder / CURATED_LISTS[folder],
                               "copy IIC's curated lists into curated/, pass list_file=PATH, or pass "
                               "curated=False to use every image of the split")
        else:
            ids = sorted(p.stem for p in self.image_dir.glob("*.jpg"))
            if not ids:
                raise DataError(f"no .jpg images in {self.image_dir}. Fix: extract the COCO {folder} images there.")
        super().__init__(root, "train" if folder == "train2017" else "val", ids, COARSE_CLASSES,
                         transform=transform, label_lut=label_lut(FINE_TO_COARSE), label_set="27 coarse classes")

    @classmethod
    def splits(cls, root: str | Path) -> list[str]:
        root = Path(root)
        return [s for s in ("train", "val")
                if (root / "curated" / SPLIT_FOLDERS[s] / CURATED_LISTS[SPLIT_FOLDERS[s]]).is_file()]

    def image_path(self, i: int) -> Path:
        return self.image_dir / f"{self.ids[i]}.jpg"

    def label_path(self, i: int) -> Path:
        return self.label_dir / f"{self.ids[i]}.png"
