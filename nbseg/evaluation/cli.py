"""``nbseg eval``: score a folder of predicted cluster maps against a folder of ground-truth label maps."""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from nbseg.data.images import read_label_array
from nbseg.errors import ConfigError, DataError
from nbseg.evaluation.metrics import MEAN_OVER, PROTOCOLS, PROTOCOL_DESCRIPTIONS, evaluate

N_LISTED = 5  # missing file names shown per direction

EPILOG = """\
protocols:
  hungarian    {hungarian}
  many-to-one  {many_to_one}
  per-image    {per_image}

Files are paired by name without extension (ground truth 2007_000033.png <-> prediction 2007_000033.png).
Label PNGs must be single-channel (palette "P", "L" or 16-bit "I"); palette PNGs are read as their indices.
Scores are percentages in the text output and fractions in [0, 1] in the --json output.

examples:
  nbseg eval --gt data/world/SegmentationClass --pred runs/alignseg/pred --protocol per-image --eval-size 100
  nbseg eval --gt GT --pred PRED --num-classes 27 --num-clusters 27 --class-names classes.json:full --json
""".format(hungarian=PROTOCOL_DESCRIPTIONS["hungarian"], many_to_one=PROTOCOL_DESCRIPTIONS["many-to-one"],
           per_image=PROTOCOL_DESCRIPTIONS["per-image"])


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="score predicted cluster maps (PNG folder) against ground truth (PNG folder)",
        description="Score predicted cluster-id PNGs against ground-truth class-id PNGs, matched by file name, "
                    "with one of three matching protocols, and print mIoU, pixel accuracy and per-class IoU.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground-truth label PNGs")
    p.add_argument("--pred", required=True, type=Path, metavar="DIR",
                   help="folder of predicted cluster-id PNGs with the same file names")
    p.add_argument("--protocol", choices=PROTOCOLS, default="hungarian",
                   help="matching protocol (default: hungarian, dataset-level; AlignSeg's released code scores "
                        "per-image)")
    p.add_argument("--ignore", type=int, default=255, metavar="ID",
                   help="ground-truth id to ignore (default: 255; negative ids are always ignored)")
    p.add_argument("--num-classes", type=int, default=None, metavar="C",
                   help="number of classes C (default: the number of --class-names, else 1 + the largest gt id "
                        "found; a class absent from every file is then missed, so pass C for comparable tables)")
    p.add_argument("--num-clusters", type=int, default=None, metavar="K",
                   help="number of clusters K (default: 1 + the largest predicted id found)")
    p.add_argument("--class-names", default=None, metavar="FILE.json[:KEY]",
                   help="JSON list of class names, or an object with a 'names' list; for a file holding several "
                        "label sets (e.g. the world's classes.json) name one after a colon: classes.json:voc")
    p.add_argument("--eval-size", type=int, default=None, metavar="N",
                   help="resize prediction and ground truth (nearest) to N x N before scoring, as AlignSeg's "
                        "released evaluation does with N=100; then their sizes may differ (default: score at "
                        "the files' resolution, which must match)")
    p.add_argument("--mean-over", choices=MEAN_OVER, default="present",
                   help="average IoU over the classes present in the ground truth (present), over those present "
                        "or predicted, a predicted class absent from the ground truth scoring 0 (stego: STEGO's "
                        "and TransFGU's nanmean), or over all C classes (default: present; the per-image "
                        "protocol only allows present)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report "
                                                       "(notes about inferred values then go to stderr)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.set_defaults(func=_cli)


def _label_pngs(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} does not exist or is not a folder")
    files = {path.stem: path for path in sorted(folder.iterdir())
             if path.is_file() and path.suffix.lower() == ".png"}
    if not files:
        raise DataError(f"{role} folder {folder} holds no .png files")
    return files


def _paired_stems(gt_files: dict[str, Path], pred_files: dict[str, Path], gt_dir: Path, pred_dir: Path) -> list[str]:
    """The common stems; any file without a partner is an error that lists a few of each direction."""
    no_pred = sorted(set(gt_files) - set(pred_files))
    no_gt = sorted(set(pred_files) - set(gt_files))
    if not (no_pred or no_gt):
        return sorted(gt_files)
    lines = [f"the file names in {gt_dir} and {pred_dir} do not match:"]
    for missing, files, role, other_dir in ((no_pred, gt_files, "ground-truth", pred_dir),
                                            (no_gt, pred_files, "prediction", gt_dir)):
        if missing:
            shown = ", ".join(files[stem].name for stem in missing[:N_LISTED])
            more = f" and {len(missing) - N_LISTED} more" if len(missing) > N_LISTED else ""
            lines.append(f"  {len(missing)} {role} file(s) have no partner in {other_dir}: {shown}{more}")
    raise DataError("\n".join(lines))


def _read_label_png(path: Path) -> np.ndarray:
    return read_label_array(path)


def _load_class_names(spec: str) -> list[str]:
    path, key = Path(spec), None
    if not path.exists() and ":" in spec:
        file_part, key = spec.rsplit(":", 1)
        path = Path(file_part)
    if not path.is_file():
        raise DataError(f"class-name file {path} does not exist")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read class names from {path}: {err}") from err
    if key is not None:
        if not isinstance(content, dict) or key not in content:
            keys = sorted(content) if isinstance(content, dict) else []
            raise DataError(f"{path} has no entry {key!r}" + (f"; it has {keys}" if keys else ""))
        content = content[key]
    if isinstance(content, dict) and "names" in content:
        content = content["names"]
    if isinstance(content, dict):
        with_names = sorted(k for k, v in content.items() if isinstance(v, dict) and "names" in v)
        hint = f"; pick a label set with {path}:KEY, one of {with_names}" if with_names else ""
        raise DataError(f"{path} holds no list of class names{hint}")
    if not isinstance(content, list) or not all(isinstance(n, str) for n in content):
        raise DataError(f"{path}: class names must be a JSON list of strings")
    return content


class _PngPairs:
    """Reads the paired label PNGs; checks sizes (naming the file) and, once K and C are known, the id ranges."""

    def __init__(self, stems, gt_files, pred_files, ignore_index, eval_size):
        self.stems, self.gt_files, self.pred_files = stems, gt_files, pred_files
        self.ignore_index, self.eval_size = ignore_index, eval_size
        self.n_clusters: int | None = None
        self.n_classes: int | None = None

    def _gt_ids(self, gt: np.ndarray) -> np.ndarray:
        return gt[(gt >= 0) & (gt != self.ignore_index)]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for stem in self.stems:
            gt_path, pred_path = self.gt_files[stem], self.pred_files[stem]
            gt, pred = _read_label_png(gt_path), _read_label_png(pred_path)
            if self.eval_size is None and gt.shape != pred.shape:
                raise DataError(f"{pred_path.name}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) but the "
                                f"ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}; save predictions at the "
                                f"ground-truth size or pass --eval-size")
            if self.n_clusters is not None and pred.size and pred.max() >= self.n_clusters:
                raise DataError(f"{pred_path} holds cluster id {pred.max()} but K={self.n_clusters} "
                                f"(ids 0..{self.n_clusters - 1}); raise --num-clusters")
            gt_ids = self._gt_ids(gt)
            if self.n_classes is not None and gt_ids.size and gt_ids.max() >= self.n_classes:
                raise DataError(f"{gt_path} holds class id {gt_ids.max()} but C={self.n_classes} "
                                f"(ids 0..{self.n_classes - 1}, ignore {self.ignore_index}); raise --num-classes "
                                f"or set --ignore")
            yield pred, gt

    def largest_ids(self) -> tuple[int, int]:
        """(largest predicted id, largest non-ignored gt id) over all files; -1 when there is none."""
        pred_max, gt_max = -1, -1
        for pred, gt in self:
            pred_max = max(pred_max, int(pred.max()) if pred.size else -1)
            gt_ids = self._gt_ids(gt)
            gt_max = max(gt_max, int(gt_ids.max()) if gt_ids.size else -1)
        return pred_max, gt_max


def _cli(args) -> int:
    for flag, value in (("--num-classes", args.num_classes), ("--num-clusters", args.num_clusters),
                        ("--eval-size", args.eval_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    notes_stream = sys.stderr if args.json else sys.stdout
    gt_files, pred_files = _label_pngs(args.gt, "ground-truth"), _label_pngs(args.pred, "prediction")
    stems = _paired_stems(gt_files, pred_files, args.gt, args.pred)
    class_names = _load_class_names(args.class_names) if args.class_names else None
    if class_names is not None and args.num_classes is not None and len(class_names) != args.num_classes:
        raise ConfigError(f"--class-names lists {len(class_names)} names but --num-classes is {args.num_classes}")

    pairs = _PngPairs(stems, gt_files, pred_files, args.ignore, args.eval_size)
    n_classes = args.num_classes if args.num_classes is not None else (
        len(class_names) if class_names is not None else None)
    n_clusters = args.num_clusters
    notes, inferred = [], {"n_classes": n_classes is None, "n_clusters": n_clusters is None}
    if n_classes is None or n_clusters is None:
        pred_max, gt_max = pairs.largest_ids()
        if n_classes is None:
            if gt_max < 0:
                raise DataError(f"every ground-truth pixel in {args.gt} is ignored (id {args.ignore} or negative)")
            n_classes = gt_max + 1
            notes.append(f"inferred C={n_classes} classes from the largest ground-truth id {gt_max} "
                         f"(pass --num-classes to set it)")
        if n_clusters is None:
            n_clusters = pred_max + 1
            notes.append(f"inferred K={n_clusters} clusters from the largest predicted id {pred_max} "
                         f"(pass --num-clusters to set it)")
    pairs.n_classes, pairs.n_clusters = n_classes, n_clusters
    for note in notes:
        print(f"nbseg eval: {note}", file=notes_stream)

    # tee: evaluate() takes predictions and ground truth as two iterables but each file should be read once;
    # zip inside evaluate() advances both in step, so tee buffers a single pair.
    for_preds, for_gts = itertools.tee(iter(pairs))
    result = evaluate((pred for pred, _ in for_preds), (gt for _, gt in for_gts), n_clusters, n_classes,
                      protocol=args.protocol, class_names=class_names, ignore_index=args.ignore,
                      mean_over=args.mean_over, eval_size=args.eval_size)
    if args.json:
        out = result.to_dict()
        out.update(gt_dir=str(args.gt), pred_dir=str(args.pred), n_pairs=len(stems), inferred=inferred)
        print(json.dumps(out, indent=2))
        return 0
    print(f"nbseg eval: {len(stems)} image pairs, ground truth {args.gt}, predictions {args.pred}")
    print(f"protocol {args.protocol}: {PROTOCOL_DESCRIPTIONS[args.protocol]}")
    print(result.summary())
    if result.miou_excl_first is not None:
        print("(the per-image protocol matches every image separately: not comparable with dataset-level numbers)")
    table = result.table()
    table["iou"] = 100 * table["iou"]
    table[["precision", "recall"]] = 100 * table[["precision", "recall"]]
    print(table.rename(columns={"iou": "IoU %", "precision": "precision %", "recall": "recall %"})
          .to_string(float_format=lambda v: f"{v:.2f}", na_rep="-"))
    return 0

