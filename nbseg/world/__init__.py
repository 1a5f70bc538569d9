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

Two renders of the same world (one generator; objects are sized relative to the image, textures in pixels; scene
``i`` differs in detail between them, since the noise textures draw per pixel): ``data/world`` at
:data:`TRAIN_SIZE` (96 px), which the embedded backbone was trained on and every method's world config reads, and
``data/world_192px`` at :data:`PROBE_SIZE`, which the quickstart, the probe notebooks and
``benchmarks/embedded_quality.py`` look at the features with (objects twice as many patches across; see
:mod:`.classes` for why). Each default root is generated on first use.

Determinism: image ``index`` is rendered from ``numpy.random.default_rng([seed, index])`` alone. Train images
have indices ``0 .. n_train-1`` and val images ``VAL_INDEX_OFFSET + 0 .. n_val-1``, so changing ``--train`` never
changes the val split, and the same arguments give byte-identical files.

The pieces: :mod:`.classes` (classes, palette, :class:`WorldSpec`), :mod:`.rendering` (one image from (seed, index)),
:mod:`.write` (a root: write, verify, repair), :mod:`.files` (the per-file record); ``nbseg world`` is here.
"""
from __future__ import annotations

import time
from pathlib import Path

from nbseg.errors import ConfigError
from nbseg.world.classes import (CLASS_COLOURS, COARSE_GROUPS, COLOUR_NAMES, PALETTE, STUFF_CLASSES, STUFF_HEIGHT,
                                 SYNONYMS, THING_CLASSES, THING_HEIGHT, TWO_PART_THINGS, VAL_INDEX_OFFSET,
                                 WORLD_FORMAT_VERSION, PROBE_SIZE, TRAIN_SIZE, Sample, WorldSpec, class_table)
from nbseg.world.rendering import THING_TEXTURE, render
from nbseg.world.write import (damaged, default_root, default_spec, ensure_world, image_id, is_complete, split_indices,
                               voc_palette, write_world)

__all__ = ["CLASS_COLOURS", "COARSE_GROUPS", "COLOUR_NAMES", "PALETTE", "STUFF_CLASSES", "STUFF_HEIGHT", "SYNONYMS",
           "THING_CLASSES", "THING_HEIGHT", "THING_TEXTURE", "TWO_PART_THINGS", "VAL_INDEX_OFFSET",
           "WORLD_FORMAT_VERSION", "PROBE_SIZE", "TRAIN_SIZE", "Sample", "WorldSpec", "class_table", "render",
           "damaged", "default_root", "default_spec",
           "ensure_world", "image_id", "is_complete", "split_indices", "voc_palette", "write_world",
           "register_cli"]


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "world", help="write the embedded synthetic world (PASCAL VOC layout)",
        description="Write the embedded synthetic world in the PASCAL VOC layout. Identical arguments give "
                    "byte-identical files; an existing complete root with the same arguments is left untouched.")
    p.add_argument("dir", nargs="?", default=None,
                   help="output root (default: the default root of --size: $NBSEG_DATA/world, else data/world in the "
                        "checkout, at 96 px; world_<size>px beside it at any other size)")
    p.add_argument("--seed", type=int, default=0, help="world seed; image i is rendered from (seed, i) alone")
    p.add_argument("--size", type=int, default=TRAIN_SIZE,
                   help=f"image side in pixels (a multiple of 8 suits patch-8 ViTs); the training render is "
                        f"{TRAIN_SIZE}, the probes' render {PROBE_SIZE}")
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
    if args.size < 16 or args.train < 0 or args.val < 1:
        raise ConfigError(f"need --size >= 16, --train >= 0 and --val >= 1 "
                          f"(got --size {args.size}, --train {args.train}, --val {args.val})")
    for flag, value in (("--colour-prior", args.colour_prior), ("--layout-prior", args.layout_prior)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag} is a probability: give a value in [0, 1], not {value}")
    t0 = time.perf_counter()
    spec = WorldSpec(seed=args.seed, size=args.size, n_train=args.train, n_val=args.val,
                     colour_prior=args.colour_prior, layout_prior=args.layout_prior)
    root = Path(args.dir) if args.dir is not None else default_root(args.size)
    bad = damaged(root, spec, checksums=True)   # the explicit command checks every byte it keeps
    root = write_world(root, spec, workers=args.workers, checksums=True)
    done = (f"{len(bad)} damaged file(s) regenerated ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})"
            if bad else "all files verified (sha256)" if bad == [] else "written")
    print(f"world at {root}: {done} in {time.perf_counter() - t0:.1f} s "
          f"({args.train} train + {args.val} val images, {args.size}px, seed {args.seed})")
    return 0
