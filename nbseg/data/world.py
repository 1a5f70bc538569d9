"""The embedded synthetic world (:mod:`nbseg.world`), read through the PASCAL VOC loader.

Three label sets, chosen with ``labels=``:

* ``"voc"``: ``SegmentationClass``, 0 = background, 1..8 = things, 255 = thin boundary band (ignored), 9 classes;
* ``"full"``: ``SegmentationClassFull``, every pixel labelled, things 0..7 then stuff 8..12, 13 classes;
* ``"coarse"``: the full labels mapped through ``classes.json`` ``coarse.full_to_coarse`` (3 groups).

Class names come from the root's ``classes.json``, so a root is self-describing.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbseg.world as world_gen
from nbseg.data.base import Transform, label_lut, require_dir
from nbseg.data.voc import VOCDataset
from nbseg.errors import DataError

LABEL_SETS = ("voc", "full", "coarse")


class WorldDataset(VOCDataset):
    """The embedded world; ``root=None`` is :func:`nbseg.world.default_root` of the render ``size`` (None: the
    training render, 96 px), generated on first use. With a ``root`` given, ``size`` (when not None) must be the
    size that root was rendered at."""

    name = "world"
    label_hint = "the world root is damaged or stale; regenerate it with `nbseg world DIR`"

    def __init__(self, root: str | Path | None = None, split: str = "val", transform: Transform | None = None, *,
                 labels: str = "voc", size: int | None = None):
        if labels not in LABEL_SETS:
            raise DataError(f"unknown world label set {labels!r}. Fix: use labels= one of {list(LABEL_SETS)}.")
        root = resolve_world_root(root, size)
        table = read_class_table(root)
        if labels == "voc":
            names, label_dir, lut = table["voc"]["names"], "SegmentationClass", None
        elif labels == "full":
            names, label_dir, lut = table["full"]["names"], "SegmentationClassFull", None
        else:
            names, label_dir = table["coarse"]["names"], "SegmentationClassFull"
            lut = label_lut(table["coarse"]["full_to_coarse"])
        self.labels = labels
        render = (_recorded_spec(root) or {}).get("size")     # every title and metrics.json says which render
        super().__init__(root, split, transform, label_dir=label_dir, class_names=names, label_lut=lut,
                         label_set=f"{labels} labels" + (f", {render} px" if render else ""))

    @classmethod
    def splits(cls, root: str | Path | None) -> list[str]:
        return VOCDataset.splits(resolve_world_root(root))


def resolve_world_root(root: str | Path | None, size: int | None = None) -> Path:
    """The world root to read. A default root (``root`` None: the render at ``size``) is generated when absent,
    unfinished or of an older format version; one written by ``nbseg world`` with other counts or priors is read as
    it is, and one of another size is an error (never overwritten). Any other root must exist already, so a typo
    never silently renders thousands of images somewhere, and must have been rendered at ``size`` when that is
    given."""
    if size is not None and (not isinstance(size, int) or size < 16):
        raise DataError(f"a world render needs a size of at least 16 px (a multiple of 8 suits patch-8 ViTs), not "
                        f"{size!r}. Fix: pass size=None for the training render or e.g. size=192.")
    if root is None:
        root, spec = world_gen.default_root(size), world_gen.default_spec(size)
        recorded = _recorded_spec(root)
        if recorded is None or recorded.get("version") != spec.version:     # absent, unfinished or stale format
            world_gen.ensure_world(root, spec)
        elif recorded.get("size") != spec.size:
            raise DataError(f"the default world root {root} holds a {recorded.get('size')}-px render, not the "
                            f"{spec.size}-px one it is the place of. Fix: move it elsewhere (and pass that folder as "
                            f"the root) or delete it; it is generated again on first use.")
        return root
    root = require_dir(Path(root), "embedded world root", f"generate it with `nbseg world {root}`, or leave the root "
                                                          f"unset (data_root=null) for the default world")
    recorded = _recorded_spec(root)
    if size is not None and recorded is not None and recorded.get("size") != size:
        raise DataError(f"the world at {root} was rendered at {recorded.get('size')} px, not the {size} px asked "
                        f"for. Fix: ask for size {recorded.get('size')} (or None), or render the scenes at {size} px "
                        f"with `nbseg world DIR --size {size}` and read that root.")
    return root


def _recorded_spec(root: Path) -> dict | None:
    """The ``spec`` recorded in ``root/world.json``, or None when there is no readable marker."""
    try:
        spec = json.loads((root / "world.json").read_text()).get("spec")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return spec if isinstance(spec, dict) else None


def read_class_table(root: Path) -> dict:
    path = root / "classes.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"world class table {path} cannot be read ({err}). Fix: regenerate the root with "
                        f"`nbseg world {root}`.") from err
