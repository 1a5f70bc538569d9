"""Validate a dataset root: ``nbseg data check NAME ROOT``, and :func:`check_dataset` for library use.

Every sample is read exactly as training and evaluation read it, so the checks are the loaders' own: listed files
exist and decode, each label map has its image's size, and every label value is a class id or ignore. The first
problem stops the check with a :class:`~nbseg.errors.DataError` naming the file, the value and the fix.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from nbseg.data import DATASETS, available_splits, dataset_names, load_dataset
from nbseg.data.base import SegDataset
from nbseg.errors import DataError
from nbseg.progress import tqdm

EXPECTED_SPLITS = ("train", "val")  # what `data check` says is absent when a root lacks it


def _single(samples: list):
    """DataLoader collate_fn for batches of one: the sample itself (module level, so workers can pickle it)."""
    return samples[0]


def check_dataset(ds: SegDataset, limit: int | None = None, *, workers: int = 0,
                  progress: bool = False) -> pd.DataFrame:
    """Read the first ``limit`` samples of ``ds`` (all by default), raising DataError on the first bad one.

    Returns per-class pixel counts: one row per class plus a last ``(ignore)`` row, columns ``id``, ``class``,
    ``pixels``, ``images`` (images containing the class) and ``share`` (of all labelled-map pixels). For an
    unlabelled dataset the table has no rows. ``df.attrs`` holds ``images`` (samples read), ``labelled``
    (samples with a label) and ``dataset`` (``ds.describe()``).
    """
    n = len(ds) if limit is None else min(limit, len(ds))
    pixels = torch.zeros(ds.num_classes + 1, dtype=torch.long)      # last slot: ignore
    images = torch.zeros(ds.num_classes + 1, dtype=torch.long)
    labelled = 0
    # One sample per step (collate_fn unwraps it), so images of different sizes need no transform.
    loader = DataLoader(torch.utils.data.Subset(ds, range(n)), batch_size=1, num_workers=workers,
                        collate_fn=_single)
    for sample in tqdm(loader, total=n, desc=f"check {ds.describe()}", unit="img", disable=not progress):
        if sample.label is None:
            continue
        labelled += 1
        label = sample.label.flatten()
        ignored = label == ds.ignore_index
        counts = torch.bincount(label[~ignored], minlength=ds.num_classes)
        counts = torch.cat([counts, ignored.sum().reshape(1)])
        pixels += counts
        images += (counts > 0).long()
    if labelled:
        table = pd.DataFrame({
            "id": list(range(ds.num_classes)) + [ds.ignore_index],
            "class": ds.class_names + ["(ignore)"],
            "pixels": pixels.tolist(),
            "images": images.tolist(),
        })
        table["share"] = table["pixels"] / max(int(pixels.sum()), 1)
    else:
        table = pd.DataFrame(columns=["id", "class", "pixels", "images", "share"])
    table.attrs.update(images=n, labelled=labelled, dataset=ds.describe())
    return table


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset tools (check a dataset root)",
                                 description="Dataset tools.")
    actions = data.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser(
        "check", help="validate every sample of a dataset root and print per-class pixel counts",
        description="Read every sample of each split of a dataset root exactly as training and evaluation do, "
                    "print the image count and a per-class pixel-count table per split, and exit non-zero with "
                    "the first problem (missing or corrupt file, label map of the wrong size, label value that is "
                    "neither a class nor 255).")
    p.add_argument("name", choices=dataset_names(), metavar="NAME",
                   help=f"registered dataset name, one of: {', '.join(dataset_names())}")
    p.add_argument("root", nargs="?", default=None, metavar="ROOT",
                   help="dataset root folder (optional for 'world', whose default root is generated if absent)")
    p.add_argument("--split", nargs="+", default=None, metavar="S",
                   help="split(s) to check (default: every split whose list or folder exists under ROOT)")
    p.add_argument("--labels", choices=["voc", "full", "coarse"], default=None,
                   help="world only: label set to check (default voc)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="check only the first N samples of each split (default: all)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword argument of the dataset, repeatable (e.g. --option masks_dir=masks "
                        "--option num_classes=5 for 'folder', --option list_file=ids.txt for 'cocostuff27'); "
                        "integer values are parsed as integers")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="data-loading worker processes (default 0: read in this process)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=_cli_check)
    data.set_defaults(func=lambda args: _print_help(data))


def _print_help(parser) -> int:
    """``nbseg data`` without an action: show what the actions are."""
    parser.print_help()
    return 2


def _parse_options(options: list[str]) -> dict:
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise DataError(f"--option {option!r} is not KEY=VALUE. Fix: write e.g. --option masks_dir=masks.")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else value
    return kwargs


def _cli_check(args) -> int:
    kwargs = _parse_options(args.option)
    if args.labels is not None:
        if args.name != "world":
            raise DataError(f"--labels only applies to the 'world' dataset, not {args.name!r}.")
        kwargs["labels"] = args.labels
    splits = args.split or available_splits(args.name, args.root)
    if not splits:
        raise DataError(f"no split of {args.name!r} found under {args.root}. Fix: check the root folder, or name "
                        f"the split with --split.")
    with pd.option_context("display.max_rows", None, "display.width", 120):
        for split in splits:
            ds = load_dataset(args.name, args.root, split, **kwargs)
            table = check_dataset(ds, args.limit, workers=args.workers, progress=sys.stderr.isatty())
            print(f"{ds.describe()}: {table.attrs['images']} images checked, {table.attrs['labelled']} labelled, "
                  f"root {ds.root}")
            if len(table):
                print(table.to_string(index=False, formatters={"share": "{:.2%}".format}))
            print()
    # Why say so: a root without its val list passed as "ok", and training then found nothing to evaluate on.
    absent = [] if args.split or args.name == "folder" else [s for s in EXPECTED_SPLITS if s not in splits]
    for split in absent:
        print(f"note: {args.name} has no {split!r} split under {args.root or 'the default root'}"
              f"{_split_file_hint(args.name, args.root, split)}; commands that evaluate on {split} will fail. Fix: "
              f"restore its id list, or pass another split to --split / eval_split")
    print(f"ok: {args.name} ({', '.join(splits)})" + (f"; absent: {', '.join(absent)}" if absent else ""))
    return 0


def _split_file_hint(name: str, root, split: str) -> str:
    """`` (expected PATH)`` where the dataset names the file of a split, else nothing."""
    cls = DATASETS[name][0]
    if root is None or not hasattr(cls, "split_file"):
        return ""
    try:
        return f" (expected {cls.split_file(Path(root), split)})"
    except Exception:   # a layout the class resolves differently: the note stands without the path
        return ""
