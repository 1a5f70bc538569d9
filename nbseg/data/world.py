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
    """The embedded world; ``root=None`` is :func:`nbseg.world.default_root`, generated on first use."""

    name = "world"
    label_hint = "the world root is damaged or stale; regenerate it with `nbseg world DIR`"

    def __init__(self, root: str | Path | None = None, split: str = "val", transform: Transform | None = None, *,
                 labels: str = "voc"):
        if labels not in LABEL_SETS:
            raise DataError(f"unknown world label set {labels!r}. Fix: use labels= one of {list(LABEL_SETS)}.")
        root = resolve_world_root(root)
        table = read_class_table(root)
        if labels == "voc":
            names, label_dir, lut = table["voc"]["names"], "SegmentationClass", None
        elif labels == "full":
            names, label_dir, lut = table["full"]["names"], "SegmentationClassFull", None
        else:
            names, label_dir = table["coarse"]["names"], "SegmentationClassFull"
            lut = label_lut(table["coarse"]["full_to_coarse"])
        self.labels = labels
        super().__init__(root, split, transform, label_dir=label_dir, class_names=names, label_lut=lut,
                         label_set=f"{labels} labels")

    @classmethod
    def splits(cls, root: str | Path | None) -> list[str]:
        return VOCDataset.splits(resolve_world_root(root))


def resolve_world_root(root: str | Path | None) -> Path:
    """The world root to read. The default root is generated when absent or incomplete (no ``world.json`` marker);
    any other root must exist already, so a typo never silently renders thousands of images somewhere."""
    default = world_gen.default_root()
    root = Path(root) if root is not None else default
    if root.resolve() == default.resolve() and not (root / "world.json").is_file():
        world_gen.ensure_world(root)
    return require_dir(root, "embedded world root", f"generate it with `nbseg world {root}`, or leave the root "
                                                    f"unset (data_root=null) for the default world")


def read_class_table(root: Path) -> dict:
    path = root / "classes.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"world class table {path} cannot be read ({err}). Fix: regenerate the root with "
                        f"`nbseg world {root}`.") from err
