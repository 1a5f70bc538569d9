"""The embedded world: a synthetic segmentation dataset written in the PASCAL VOC layout.

Why it exists: real datasets and real DINO weights cannot be downloaded on the machines nbseg is developed and
tested on, yet every notebook needs images with ground truth. The world is built so that the *real* VOC loader
reads it, and so that the task cannot be solved by colour alone:

* **Class identity is carried by texture and shape first, colour second, as in natural images.** Each class
  prefers a few palette colours (``CLASS_COLOURS``; shared with other classes, like sky-blue and water-blue) and
  uses them with probability ``colour_prior`` (default 0.6), otherwise any palette colour; per-instance jitter
  stays. So colour is evidence but never the answer: dataset-level k-means on raw pixel colours stays below 0.20
  mIoU on the full labels (``benchmarks/world_stats.py`` reports it; a test bounds it).
* **Textures at scales a patch-8 ViT resolves**: periods of 9-15 px on things (>= ~1.5 patches at native size,
  so crop rescaling does not alias them), grass 9, water 11, bricks 10 x 20 px; each class keeps its own pattern
  and the two-part things keep parts with different textures.
* **Layout and co-occurrence as in real scenes**: stuff is stacked top to bottom in a natural order most of the
  time (sky, then brick, then water / sand / grass), kites and stars fly in the upper half, houses, mushrooms and
  boxes stand in the lower half; things are large enough (cluttered ones 4-7 patches across) that their texture
  repeats on them.
* 8 thing classes (two of them, ``mushroom`` and ``house``, made of two parts with different textures, since
  AlignSeg and TransFGU both report part discovery) and 5 stuff classes.
* Scenes range from object-centric (one large object) to cluttered (up to five objects, with occlusion) over 1-3
  stuff regions; random scale, rotation, lighting gradient, noise and blur.

Layout written under ``root``::

    JPEGImages/<id>.png               RGB images (lossless PNG; the VOC loader accepts .jpg or .png)
    SegmentationClass/<id>.png        palette PNG: 0 = background, 1..8 = things, 255 = thin boundary band
    SegmentationClassFull/<id>.png    palette PNG: every pixel labelled, things 0..7 then stuff 8..12
    ImageSets/Segmentation/{train,val}.txt
    classes.json                      names, thing/stuff flags, coarse groups (a COCO-Stuff-3-like mapping)
    captions.jsonl                    templated captions per image (synonyms, attributes), for PGSeg
    world.json                        the arguments that generated the root (used to detect stale roots)

Determinism: image ``index`` is rendered from ``numpy.random.default_rng([seed, index])`` alone. Train images
have indices ``0 .. n_train-1`` and val images ``VAL_INDEX_OFFSET + 0 .. n_val-1``, so changing ``--train`` never
changes the val split, and the same arguments give byte-identical files.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from nbseg.io import atomic_write_bytes, atomic_write_text, png_bytes

VAL_INDEX_OFFSET = 1_000_000
WORLD_FORMAT_VERSION = 2   # 2: colour priors, coarser textures, layout (world v2)

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
    size: int = 96
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


# ----------------------------------------------------------------------------------------------------------
# Textures: functions of pixel coordinates (u, v) in a rotated frame, returning a mixing weight in [0, 1].
# Periods are in pixels (9-15 on things), so textures stay resolvable by an 8-pixel patch after crop rescaling.
# ----------------------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    field_ -= field_.min()
    return field_ / max(float(field_.max()), 1e-6)


def _texture(kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] for texture ``kind`` at rotated pixel coordinates (u, v)."""
    period = rng.uniform(9.0, 15.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "dots":        # polka dots on a square lattice
        du = np.mod(u / period + phase, 1.0) - 0.5
        dv = np.mod(v / period + phase, 1.0) - 0.5
        return (du * du + dv * dv < 0.08).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period + phase) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "stripes":     # bold parallel stripes
        return (np.sin(2 * np.pi * u / period + phase) > 0).astype(np.float32)
    if kind == "rings":       # concentric rings around the object centre
        return (np.sin(2 * np.pi * np.hypot(u, v) / period + phase) > 0).astype(np.float32)
    if kind == "grid":        # thin lines on a square grid
        gu = np.abs(np.mod(u / period + phase, 1.0) - 0.5) > 0.38
        gv = np.abs(np.mod(v / period + phase, 1.0) - 0.5) > 0.38
        return (gu | gv).astype(np.float32)
    if kind == "spokes":      # radial wedges
        return (np.sin(6 * np.arctan2(v, u) + phase) > 0).astype(np.float32)
    if kind == "hatch":       # diagonal cross-hatch
        a = np.sin(2 * np.pi * (u + v) / period + phase) > 0.4
        b = np.sin(2 * np.pi * (u - v) / period + phase) > 0.4
        return (a | b).astype(np.float32)
    if kind == "zigzag":
        return (np.sin(2 * np.pi * (v + 2.0 * np.abs(np.mod(u / period, 1.0) - 0.5) * period) / period) > 0
                ).astype(np.float32)
    if kind == "solid_speckle":  # nearly flat with sparse blotches
        return (ndimage.gaussian_filter(rng.random(u.shape).astype(np.float32), 1.5) > 0.56).astype(np.float32)
    # ---------- stuff textures ----------
    if kind == "sky":         # smooth gradient with soft clouds
        return np.clip(0.6 * _smooth_noise(rng, u.shape, 6.0) + 0.4 * (v - v.min()) / max(np.ptp(v), 1), 0, 1)
    if kind == "grass":       # vertical blades, 9 px apart, bent by smooth noise
        blades = np.sin(2 * np.pi * u / 9.0 + 3 * _smooth_noise(rng, u.shape, 4.0)) > 0.2
        return np.clip(blades * 0.8 + 0.2 * rng.random(u.shape), 0, 1).astype(np.float32)
    if kind == "water":       # horizontal waves
        return (0.5 + 0.5 * np.sin(2 * np.pi * v / 11.0 + 1.5 * np.sin(2 * np.pi * u / 23.0 + phase))
                ).astype(np.float32)
    if kind == "brick":       # running-bond bricks (10 x 20 px) with mortar lines
        row = np.floor(v / 10.0)
        uu = u + 10.0 * (row % 2)
        mortar = (np.mod(v, 10.0) < 2.0) | (np.mod(uu, 20.0) < 2.0)
        return mortar.astype(np.float32)
    if kind == "sand":        # wind ripples (14 px) under a coarse grain
        grain = ndimage.gaussian_filter(rng.random(u.shape).astype(np.float32), 1.0)
        ripples = 0.5 + 0.5 * np.sin(2 * np.pi * (v + 2.0 * np.sin(2 * np.pi * u / 31.0 + phase)) / 14.0)
        return np.clip(0.6 * ripples + 1.6 * (grain - 0.5) + 0.2, 0, 1).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


THING_TEXTURE = {"ball": "dots", "box": "checker", "kite": "stripes", "star": "rings", "cross": "grid",
                 "ring": "spokes", "mushroom": ("dots", "stripes"), "house": ("hatch", "brick_small")}


def _thing_masks(name: str, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the parts of thing ``name`` at normalised object coordinates (x, y) (radius ~1)."""
    r = np.hypot(x, y)
    if name == "ball":
        return [r < 1.0]
    if name == "box":
        return [(np.abs(x) < 0.82) & (np.abs(y) < 0.82)]
    if name == "kite":        # isosceles triangle pointing up
        return [(y > -0.9) & (y < 0.8) & (np.abs(x) < (y + 0.9) * 0.55)]
    if name == "star":
        theta = np.arctan2(y, x)
        return [r < 0.45 + 0.5 * (0.5 + 0.5 * np.cos(5 * theta))]
    if name == "cross":
        return [((np.abs(x) < 0.3) & (np.abs(y) < 0.95)) | ((np.abs(y) < 0.3) & (np.abs(x) < 0.95))]
    if name == "ring":
        return [(r < 1.0) & (r > 0.55)]
    if name == "mushroom":    # cap (upper half disc) + stem (rectangle below)
        cap = (r < 1.0) & (y < 0.05)
        stem = (np.abs(x) < 0.3) & (y >= 0.05) & (y < 0.95)
        return [cap, stem]
    if name == "house":       # roof (triangle) + wall (rectangle)
        roof = (y < -0.1) & (y > -1.0) & (np.abs(x) < (y + 1.0) * 0.95)
        wall = (np.abs(x) < 0.7) & (y >= -0.1) & (y < 0.9)
        return [roof, wall]
    raise ValueError(name)


def _jittered_colour(rng: np.random.Generator, exclude: int | None = None, preferred: tuple[int, ...] = (),
                     prior: float = 0.0) -> tuple[np.ndarray, int]:
    """A palette colour with per-instance jitter: one of ``preferred`` with probability ``prior``, else any."""
    choices = [i for i in preferred if i != exclude]
    if choices and rng.random() < prior:
        idx = int(choices[int(rng.integers(len(choices)))])
    else:
        idx = int(rng.integers(len(PALETTE)))
    if exclude is not None and idx == exclude:
        idx = (idx + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)
    colour = np.clip(PALETTE[idx] + rng.normal(0, 0.05, 3), 0, 1).astype(np.float32)
    return colour, idx


def _paint(canvas: np.ndarray, mask: np.ndarray, weight: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> None:
    mix = c0[None, :] * (1 - weight[mask, None]) + c1[None, :] * weight[mask, None]
    canvas[mask] = mix


def render(seed: int, index: int, size: int = 96, colour_prior: float = WorldSpec.colour_prior,
           layout_prior: float = WorldSpec.layout_prior) -> Sample:
    """Render scene ``index`` of the world with ``seed``; a pure function of its arguments.

    Returns the uint8 image (size, size, 3), the VOC label map (things 1..8, background 0, boundary 255),
    the full label map (things 0..7, stuff 8..12) and templated captions. ``colour_prior`` and ``layout_prior``
    set how often classes take their preferred colours and places (see the module docstring).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    canvas = np.zeros((H, W, 3), np.float32)
    n_things = len(THING_CLASSES)
    full = np.zeros((H, W), np.uint8)
    things = np.zeros((H, W), np.uint8)          # 0 = no thing, else thing id + 1

    # ---- 1-3 stuff regions separated by wavy, tilted boundaries, usually stacked in their natural order -------
    n_stuff = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    stuff_ids = rng.choice(len(STUFF_CLASSES), size=n_stuff, replace=False)
    if rng.random() < layout_prior:
        stuff_ids = sorted(stuff_ids, key=lambda i: STUFF_HEIGHT[STUFF_CLASSES[i]])
    cuts = np.sort(rng.uniform(0.2, 0.8, n_stuff - 1)) * H
    tilt = rng.uniform(-0.35, 0.35)
    region = np.zeros((H, W), np.int64)
    for k, cut in enumerate(cuts):
        wave = cut + tilt * (xx - W / 2) + rng.uniform(1, 5) * np.sin(2 * np.pi * xx / rng.uniform(25, 60)
                                                                       + rng.uniform(0, 6.3))
        region += (yy > wave).astype(np.int64)
    stuff_names = []
    for k, sid in enumerate(stuff_ids):
        m = region == k
        if not m.any():
            continue
        name = STUFF_CLASSES[sid]
        stuff_names.append(name)
        ang = rng.uniform(-0.15, 0.15)
        u = np.cos(ang) * xx + np.sin(ang) * yy
        v = -np.sin(ang) * xx + np.cos(ang) * yy
        c0, i0 = _jittered_colour(rng, preferred=CLASS_COLOURS[name], prior=colour_prior)
        c1, _ = _jittered_colour(rng, exclude=i0, preferred=CLASS_COLOURS[name], prior=colour_prior)
        _paint(canvas, m, _texture(name, u, v, rng), c0, c1)
        full[m] = n_things + sid

    # ---- things: object-centric (one large) to cluttered (up to 4, occluding) ------------------------------
    n_obj = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    objects = []
    for _ in range(n_obj):
        cid = int(rng.integers(n_things))
        name = THING_CLASSES[cid]
        radius = (rng.uniform(0.3, 0.44) if n_obj == 1 else rng.uniform(0.16, 0.3)) * size
        cx = rng.uniform(radius * 0.6, W - radius * 0.6)
        lo, hi = radius * 0.6, H - radius * 0.6
        if name in THING_HEIGHT and rng.random() < layout_prior:
            top, bottom = THING_HEIGHT[name]
            lo, hi = max(lo, top * H), max(min(hi, bottom * H), max(lo, top * H))
        cy = rng.uniform(lo, hi)
        theta = rng.uniform(-np.pi, np.pi) if name not in TWO_PART_THINGS else rng.uniform(-0.6, 0.6)
        aspect = rng.uniform(0.85, 1.15)
        ct, st = np.cos(theta), np.sin(theta)
        u = ct * (xx - cx) + st * (yy - cy)          # rotated pixel coordinates (texture frame)
        v = -st * (xx - cx) + ct * (yy - cy)
        parts = _thing_masks(name, u / (radius * aspect), v / (radius / aspect))
        textures = THING_TEXTURE[name] if isinstance(THING_TEXTURE[name], tuple) else (THING_TEXTURE[name],)
        prefer = CLASS_COLOURS[name]
        c0, i0 = _jittered_colour(rng, preferred=prefer, prior=colour_prior)
        colour_name = COLOUR_NAMES[i0]
        for part, tex in zip(parts, textures):
            if not part.any():
                continue
            c1, i1 = _jittered_colour(rng, exclude=i0, preferred=prefer, prior=colour_prior)
            if tex == "brick_small":
                weight = _texture("grid", u, v, rng)
            else:
                weight = _texture(tex, u, v, rng)
            _paint(canvas, part, weight, c0, c1)
            if len(parts) > 1:                       # parts of one object may differ in base colour too
                c0, i0 = _jittered_colour(rng, preferred=prefer, prior=colour_prior)
        mask = np.logical_or.reduce(parts)
        full[mask] = cid
        things[mask] = cid + 1
        objects.append({"class": name, "colour": colour_name, "radius": float(radius / size)})

    # ---- photometric nuisance: lighting gradient, blur, noise -------------------------------------------
    gdir = rng.uniform(-np.pi, np.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.35) * ((np.cos(gdir) * (xx - W / 2) + np.sin(gdir) * (yy - H / 2)) / size)
    canvas *= gradient[..., None]
    blur = rng.uniform(0.0, 0.8)
    if blur > 0.15:
        canvas = ndimage.gaussian_filter(canvas, sigma=(blur, blur, 0))
    canvas += rng.normal(0, rng.uniform(0.0, 0.04), canvas.shape).astype(np.float32)
    image = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)

    # ---- VOC labels: things + background, 255 on a thin band where thing labels meet ----------------------
    voc = things.copy()
    grown = ndimage.maximum_filter(things, size=3)
    shrunk = ndimage.minimum_filter(things, size=3)
    voc[grown != shrunk] = 255

    captions = _captions(rng, objects, stuff_names)
    return Sample(image=image, voc=voc, full=full, captions=captions, objects=objects, stuff=stuff_names)


def _captions(rng: np.random.Generator, objects: list[dict], stuff: list[str]) -> list[str]:
    """Two templated captions naming the things (with colour/size attributes and synonyms) and the stuff."""
    out = []
    for _ in range(2):
        parts = []
        for obj in objects:
            syn = SYNONYMS[obj["class"]][int(rng.integers(len(SYNONYMS[obj["class"]])))]
            size_word = "large" if obj["radius"] > 0.3 else ("small" if obj["radius"] < 0.2 else "")
            attrs = [w for w in (size_word, obj["colour"] if rng.random() < 0.6 else "") if w]
            parts.append(" ".join(["a"] + attrs + [syn]))
        stuff_words = [SYNONYMS[s][int(rng.integers(len(SYNONYMS[s])))] for s in stuff]
        things_txt = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else "nothing"
        template = ["{t} on {s}", "a picture of {t} with {s}", "{t} in front of {s}"][int(rng.integers(3))]
        out.append(template.format(t=things_txt, s=" and ".join(stuff_words)))
    return out


# ----------------------------------------------------------------------------------------------------------
# Writing a root
# ----------------------------------------------------------------------------------------------------------

def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map (256 entries, flattened RGB), so label PNGs look like VOC's."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def image_id(index: int) -> str:
    return f"w{index:07d}"


def split_indices(spec: WorldSpec) -> dict[str, list[int]]:
    return {"train": list(range(spec.n_train)),
            "val": [VAL_INDEX_OFFSET + i for i in range(spec.n_val)]}


def _write_one(job: tuple[str, int, int, int, float, float]) -> tuple[str, list[str]]:
    root, seed, index, size, colour_prior, layout_prior = job
    root_p = Path(root)
    sample = render(seed, index, size, colour_prior, layout_prior)
    name = image_id(index)
    pal = voc_palette()
    files = {
        root_p / "JPEGImages" / f"{name}.png": png_bytes(Image.fromarray(sample.image, "RGB")),
        root_p / "SegmentationClass" / f"{name}.png": png_bytes(_palette_image(sample.voc, pal)),
        root_p / "SegmentationClassFull" / f"{name}.png": png_bytes(_palette_image(sample.full, pal)),
    }
    for path, data in files.items():
        atomic_write_bytes(path, data)
    return name, sample.captions


def _palette_image(label: np.ndarray, pal: list[int]) -> Image.Image:
    im = Image.fromarray(label, "P")
    im.putpalette(pal)
    return im


def default_root() -> Path:
    """``$NBSEG_DATA/world`` if set, else ``data/world`` next to the package's repository checkout."""
    base = os.environ.get("NBSEG_DATA")
    if base:
        return Path(base) / "world"
    repo = Path(__file__).resolve().parent.parent
    return repo / "data" / "world"


def _read_marker(root: Path) -> dict | None:
    try:
        info = json.loads((Path(root) / "world.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def damaged(root: Path, spec: WorldSpec, checksums: bool = False) -> list[str] | None:
    """The files of ``root`` that no longer match what ``world.json`` recorded (see :mod:`nbseg.world_files`), or
    None when the root is not a complete world of ``spec`` at all (no marker, other arguments, no record)."""
    from nbseg.world_files import damaged_files

    info = _read_marker(root)
    if not info or info.get("spec") != asdict(spec) or not isinstance(info.get("files"), dict):
        return None
    return damaged_files(root, info["files"], checksums)


def is_complete(root: Path, spec: WorldSpec, checksums: bool = False) -> bool:
    """Whether ``root`` is a world of ``spec`` whose every file has its recorded size (and sha256)."""
    return damaged(root, spec, checksums) == []


def _repair(root: Path, spec: WorldSpec, checksums: bool) -> bool:
    """Re-render only the damaged images of a world of ``spec`` (each from its index alone); False when anything
    else is wrong, which a full regeneration fixes."""
    from nbseg.world_files import image_index

    bad = damaged(root, spec, checksums)
    if not bad or any(image_index(rel) is None for rel in bad):
        return False
    for index in sorted({image_index(rel) for rel in bad}):
        _write_one((str(root), spec.seed, index, spec.size, spec.colour_prior, spec.layout_prior))
    return is_complete(root, spec, checksums)


def write_world(root: str | Path | None = None, spec: WorldSpec = WorldSpec(), *, workers: int | None = None,
                progress: bool = True, checksums: bool = False) -> Path:
    """Write the world root (idempotent: an existing complete root with the same spec is kept as is).

    Files are written atomically and ``world.json`` last, with the size and sha256 of every file, so an interrupted
    run leaves no marker and the next call regenerates. What is kept is verified first (sizes; sha256 too with
    ``checksums``): damaged images are re-rendered, anything else damaged regenerates the root.
    """
    from nbseg.progress import tqdm

    from nbseg.world_files import all_files, file_record

    root = Path(root) if root is not None else default_root()
    if is_complete(root, spec, checksums) or _repair(root, spec, checksums):
        return root
    marker = root / "world.json"
    if marker.exists():
        marker.unlink()   # a root with other arguments is regenerated in place; stale ids are removed below
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassFull", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    splits = split_indices(spec)
    jobs = [(str(root), spec.seed, idx, spec.size, spec.colour_prior, spec.layout_prior) for split in ("train", "val") for idx in splits[split]]
    captions: dict[str, list[str]] = {}
    workers = workers or min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc=f"world -> {root}", unit="img", disable=not progress)
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            for name, caps in pool.imap(_write_one, jobs, chunksize=16):
                captions[name] = caps
                bar.update()
    else:
        for job in jobs:
            name, caps = _write_one(job)
            captions[name] = caps
            bar.update()
    bar.close()
    wanted = {image_id(i) for idxs in splits.values() for i in idxs}
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassFull"):
        for f in (root / sub).glob("*.png"):
            if f.stem not in wanted:
                f.unlink()
    for split, idxs in splits.items():
        atomic_write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt",
                          "".join(image_id(i) + "\n" for i in idxs))
    atomic_write_text(root / "classes.json", json.dumps(class_table(), indent=1))
    lines = [json.dumps({"id": image_id(i), "captions": captions[image_id(i)]})
             for split in ("train", "val") for i in splits[split]]
    atomic_write_text(root / "captions.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(marker, json.dumps({"spec": asdict(spec), "generator": "nbseg.world",
                                          "files": file_record(root, all_files(root))}, indent=1))
    return root


def ensure_world(root: str | Path | None = None, spec: WorldSpec = WorldSpec(), progress: bool = True) -> Path:
    """Return a complete world root, generating it first when absent and re-rendering files whose size is not the
    recorded one (every command that needs the world calls this)."""
    return write_world(root, spec, progress=progress)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "world", help="write the embedded synthetic world (PASCAL VOC layout)",
        description="Write the embedded synthetic world in the PASCAL VOC layout. Identical arguments give "
                    "byte-identical files; an existing complete root with the same arguments is left untouched.")
    p.add_argument("dir", nargs="?", default=None,
                   help="output root (default: $NBSEG_DATA/world, else data/world in the checkout)")
    p.add_argument("--seed", type=int, default=0, help="world seed; image i is rendered from (seed, i) alone")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (a multiple of 8 suits patch-8 ViTs)")
    p.add_argument("--train", type=int, default=2000, help="number of train images")
    p.add_argument("--val", type=int, default=300, help="number of val images")
    p.add_argument("--colour-prior", type=float, default=WorldSpec.colour_prior,
                   help="probability that a region takes one of its class's preferred colours (0: colour carries "
                        "no class, as in world v1; 1: always the preferred colours)")
    p.add_argument("--layout-prior", type=float, default=WorldSpec.layout_prior,
                   help="probability that stuff is stacked in its natural order and things stand where they belong")
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(2, cores))")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    import time

    from nbseg.errors import ConfigError

    if args.size < 16 or args.train < 0 or args.val < 1:
        raise ConfigError(f"need --size >= 16, --train >= 0 and --val >= 1 "
                          f"(got --size {args.size}, --train {args.train}, --val {args.val})")
    for flag, value in (("--colour-prior", args.colour_prior), ("--layout-prior", args.layout_prior)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag} is a probability: give a value in [0, 1], not {value}")
    t0 = time.perf_counter()
    spec = WorldSpec(seed=args.seed, size=args.size, n_train=args.train, n_val=args.val,
                     colour_prior=args.colour_prior, layout_prior=args.layout_prior)
    root = Path(args.dir) if args.dir is not None else default_root()
    bad = damaged(root, spec, checksums=True)   # the explicit command checks every byte it keeps
    root = write_world(root, spec, workers=args.workers, checksums=True)
    done = (f"{len(bad)} damaged file(s) regenerated ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})"
            if bad else "all files verified (sha256)" if bad == [] else "written")
    print(f"world at {root}: {done} in {time.perf_counter() - t0:.1f} s "
          f"({args.train} train + {args.val} val images, {args.size}px, seed {args.seed})")
    return 0
