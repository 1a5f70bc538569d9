"""The world's classes (things, stuff, parts, coarse groups, synonyms), its palette and colour priors, and the spec
that generates a root (:class:`WorldSpec`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VAL_INDEX_OFFSET = 1_000_000
WORLD_FORMAT_VERSION = 2   # 2: colour priors, coarser textures, layout (world v2)
# The world is rendered at two sizes: the same generator, classes, priors and texture periods (in pixels), with
# objects sized relative to the image, so twice as many patches across at twice the size. (Scene i differs in detail
# between the two, since the noise textures draw one random number per pixel.)
# TRAIN_SIZE (96 px, a 12 x 12 grid for a ViT/8) is what the embedded backbone was trained on and what every method's
# world config trains and evaluates at: CPU-cheap, like DINO's 224-px crops. PROBE_SIZE (192 px, 24 x 24) is what
# the quickstart, the probe notebooks 01-05 and benchmarks/embedded_quality.py look at the features with, as DINO's
# features are looked at on ~500-px VOC images: at 96 px the world's objects are 4-7 patches across and 45% of the
# (patch, class) rows straddle a class boundary, which blurs one image's class centres together
# (benchmarks/angle_resolution.py).
TRAIN_SIZE = 96
PROBE_SIZE = 192

THING_CLASSES = ["ball", "box", "kite", "star", "cross", "ring", "mushroom", "house"]
STUFF_CLASSES = ["sky", "grass", "water", "brick", "sand"]
TWO_PART_THINGS = {"mushroom": ("cap", "stem"), "house": ("roof", "wall")}
# Coarse groups of the full label set, in the spirit of COCO-Stuff-3 (ground / plant / sky): 3 groups.
COARSE_GROUPS = {
    "object": THING_CLASSES,
    "ground": ["grass", "sand", "water"],
    "above": ["sky", "brick"],
}
SYNONYMS = {
    "ball": ["ball", "sphere", "orb"], "box": ["box", "crate", "square block"],
    "kite": ["kite", "triangle", "pennant"], "star": ["star", "starfish shape"],
    "cross": ["cross", "plus sign"], "ring": ["ring", "donut", "hoop"],
    "mushroom": ["mushroom", "toadstool"], "house": ["house", "hut", "cottage"],
    "sky": ["sky", "clouds"], "grass": ["grass", "lawn", "meadow"], "water": ["water", "waves", "lake"],
    "brick": ["brick wall", "bricks", "masonry"], "sand": ["sand", "beach", "dunes"],
}

# One palette shared by every class (RGB in [0, 1]); a region picks two entries and jitters them.
PALETTE = np.array([
    [0.85, 0.20, 0.20], [0.95, 0.55, 0.15], [0.95, 0.85, 0.25], [0.45, 0.75, 0.25], [0.15, 0.55, 0.30],
    [0.20, 0.70, 0.75], [0.20, 0.40, 0.85], [0.45, 0.30, 0.75], [0.80, 0.35, 0.65], [0.55, 0.35, 0.20],
    [0.92, 0.92, 0.90], [0.50, 0.50, 0.52], [0.12, 0.12, 0.15], [0.75, 0.65, 0.50],
], dtype=np.float32)
COLOUR_NAMES = ["red", "orange", "yellow", "lime", "green", "teal", "blue", "purple", "pink", "brown",
                "white", "grey", "black", "beige"]


def _colours(*names: str) -> tuple[int, ...]:
    return tuple(COLOUR_NAMES.index(n) for n in names)


# Each class's preferred palette colours (world v2): overlapping between classes as in natural images (sky and
# water share blue, sand and box share beige), so colour is evidence for a class, never a label.
CLASS_COLOURS = {
    "ball": _colours("red", "yellow", "blue", "white"), "box": _colours("brown", "beige", "orange"),
    "kite": _colours("red", "pink", "purple", "yellow"), "star": _colours("yellow", "orange", "white"),
    "cross": _colours("red", "white", "grey", "black"), "ring": _colours("orange", "pink", "teal"),
    "mushroom": _colours("red", "white", "beige", "brown"), "house": _colours("brown", "red", "grey", "white"),
    "sky": _colours("blue", "white", "teal", "grey"), "grass": _colours("lime", "green", "yellow"),
    "water": _colours("teal", "blue", "green"), "brick": _colours("red", "brown", "orange", "beige"),
    "sand": _colours("beige", "yellow", "orange", "white"),
}
# Where stuff sits, top (0) to bottom (1), and where things prefer to stand (vertical range of their centre, as a
# fraction of the image height): the layout priors of world v2.
STUFF_HEIGHT = {"sky": 0.0, "brick": 0.25, "water": 0.6, "sand": 0.8, "grass": 0.85}
THING_HEIGHT = {"kite": (0.1, 0.55), "star": (0.1, 0.6), "house": (0.45, 0.9), "mushroom": (0.5, 0.9),
                "box": (0.4, 0.9)}


@dataclass(frozen=True)
class WorldSpec:
    """The arguments that fully determine a world root."""

    seed: int = 0
    size: int = TRAIN_SIZE
    n_train: int = 2000
    n_val: int = 300
    colour_prior: float = 0.6     # probability that a region takes one of its class's preferred colours
    layout_prior: float = 0.85    # probability that stuff is stacked in its natural order (sky on top)
    version: int = WORLD_FORMAT_VERSION


@dataclass
class Sample:
    """One rendered scene. ``image`` (H, W, 3) uint8; ``voc`` and ``full`` (H, W) uint8 label maps."""

    image: np.ndarray
    voc: np.ndarray
    full: np.ndarray
    captions: list[str] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    stuff: list[str] = field(default_factory=list)


def class_table() -> dict:
    """The content of ``classes.json``: both label sets, flags and coarse groups."""
    full = THING_CLASSES + STUFF_CLASSES
    group_names = list(COARSE_GROUPS)
    group_of = {c: group_names.index(g) for g, members in COARSE_GROUPS.items() for c in members}
    return {
        "voc": {"names": ["background"] + THING_CLASSES, "ignore_index": 255,
                "description": "0 = background, 1..8 = things, 255 = boundary band (ignored)"},
        "full": {"names": full, "is_thing": [c in THING_CLASSES for c in full],
                 "description": "every pixel labelled: things 0..7, stuff 8..12"},
        "coarse": {"names": group_names, "full_to_coarse": [group_of[c] for c in full]},
        "two_part_things": {k: list(v) for k, v in TWO_PART_THINGS.items()},
        "palette_rgb": PALETTE.round(3).tolist(),
        "class_colours": {c: [COLOUR_NAMES[i] for i in CLASS_COLOURS[c]] for c in full},
    }
