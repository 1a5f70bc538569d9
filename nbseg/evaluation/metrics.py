"""Scoring unsupervised segmentations: confusion matrices, cluster-to-class matching, mIoU and pixel accuracy.

Three protocols, because the papers we reimplement do not score the same way (see the notes on the official
implementations, sections 2.3, 3.6 and 8.2):

``"hungarian"``    ONE confusion matrix over the whole split, one-to-one Hungarian matching of clusters to classes
                   (STEGO, TransFGU, IIC). With K > C clusters the unmatched clusters' pixels are errors; with
                   K < C some classes are never predicted and score IoU 0.
``"many-to-one"``  the same dataset-level matrix, but every cluster goes to the class it overlaps most; the right
                   rule for over-clustering (K > C), where Hungarian would throw most clusters away.
``"per-image"``    AlignSeg's released protocol: per image, every cluster goes to the class *present in that image*
                   with the highest precision, IoU is computed for the classes present in that image only, the
                   image score is their mean, and the result is the mean over images. Much more lenient than the
                   dataset-level protocols; label which one a table reports.

Conventions: predictions hold cluster ids ``0..K-1``; ground truth holds class ids ``0..C-1``, and pixels equal to
``ignore_index`` (or negative) are dropped before anything is counted. An id outside those ranges is an error that
names the value, never a silent drop. Scores are fractions in [0, 1].

Length: over 400 lines because the three protocols share one confusion-matrix core and one result type.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from nbseg.cluster import upsample_labels
from nbseg.errors import ConfigError, DataError

PROTOCOLS = ("hungarian", "many-to-one", "per-image")
MEAN_OVER = ("present", "stego", "all")
MEAN_OVER_DESCRIPTIONS = {
    "present": "mean over the classes present in the ground truth",
    "stego": "mean over the classes present in the ground truth or predicted (STEGO / TransFGU: a class predicted "
             "but absent from the ground truth counts as IoU 0)",
    "all": "mean over all classes (absent and never predicted = 0)",
}
PROTOCOL_DESCRIPTIONS = {
    "hungarian": "dataset-level confusion matrix, one-to-one Hungarian matching",
    "many-to-one": "dataset-level confusion matrix, each cluster to its majority class",
    "per-image": "per image: each cluster to the present class of highest precision, IoU over present classes, "
                 "mean over images (AlignSeg's released protocol)",
}
UNMATCHED = -1

LabelMap = Any  # torch.Tensor, numpy array or anything numpy.asarray accepts, holding integer ids


# ----------------------------------------------------------------------------------------------------------
# Confusion matrices
# ----------------------------------------------------------------------------------------------------------

def _as_long_tensor(labels: LabelMap, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer label map (tensor or array-like) -> torch.long tensor, on ``device`` when given."""
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point() or labels.is_complex():
            raise DataError(f"label maps must hold integer ids, got a {labels.dtype} tensor")
        tensor = labels.long()
    else:
        array = np.asarray(labels)
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise DataError(f"label maps must hold integer ids, got an array of {array.dtype}")
        tensor = torch.from_numpy(array.astype(np.int64, copy=False))
    return tensor if device is None else tensor.to(device)


def _bincount(index: torch.Tensor, length: int) -> torch.Tensor:
    """``torch.bincount`` with a fallback for CUDA under ``torch.use_deterministic_algorithms(True)``, where
    bincount refuses to run; ``index_put_`` with accumulation has a deterministic CUDA kernel."""
    if index.is_cuda and torch.are_deterministic_algorithms_enabled():
        counts = torch.zeros(length, dtype=torch.long, device=index.device)
        return counts.index_put_((index,), torch.ones_like(index), accumulate=True)
    return torch.bincount(index, minlength=length)


def confusion_matrix(pred: LabelMap, gt: LabelMap, n_pred: int, n_gt: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """Pixel counts ``confusion[p, g]`` = #pixels predicted ``p`` whose ground truth is ``g``.

    pred, gt: integer label maps of any shapes with the same number of elements (e.g. (H, W) or (B, H, W)).
    Pixels with ``gt == ignore_index`` or ``gt < 0`` are dropped first. Returns a (n_pred, n_gt) torch.long tensor
    on pred's device (gt is moved there). Raises DataError (a ValueError) naming the offending id when a kept
    pixel has ``pred`` outside ``0..n_pred-1`` or ``gt`` outside ``0..n_gt-1``.
    """
    pred = _as_long_tensor(pred)
    gt = _as_long_tensor(gt, device=pred.device)
    if pred.numel() != gt.numel():
        raise DataError(f"prediction and ground truth differ in size: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    pred, gt = pred.reshape(-1), gt.reshape(-1)
    keep = gt >= 0
    if ignore_index is not None:
        keep &= gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    if gt.numel():
        gt_max, pred_min, pred_max = int(gt.max()), int(pred.min()), int(pred.max())
        if gt_max >= n_gt:
            raise DataError(f"ground truth holds class id {gt_max} but there are only {n_gt} classes "
                            f"(ids 0..{n_gt - 1}; ignore index {ignore_index}); raise the number of classes or "
                            f"set the right ignore index")
        if pred_min < 0 or pred_max >= n_pred:
            bad = pred_min if pred_min < 0 else pred_max
            raise DataError(f"prediction holds cluster id {bad} but there are only {n_pred} clusters "
                            f"(ids 0..{n_pred - 1}); raise the number of clusters")
    return _bincount(pred * n_gt + gt, n_pred * n_gt).reshape(n_pred, n_gt)


class ConfusionAccumulator:
    """Sums confusion matrices over batches: ``update(pred, gt)`` any number of times, then read ``.matrix``.

    The (n_pred, n_gt) long matrix lives on ``device``, or on the device of the first prediction when None.
    ``n_images`` counts label maps: a (B, H, W) update adds B, anything of lower rank adds 1.
    """

    def __init__(self, n_pred: int, n_gt: int, ignore_index: int | None = 255,
                 device: torch.device | str | None = None):
        self.n_pred, self.n_gt, self.ignore_index = int(n_pred), int(n_gt), ignore_index
        self.device = None if device is None else torch.device(device)
        self._matrix: torch.Tensor | None = None
        self.n_images = 0

    def update(self, pred: LabelMap, gt: LabelMap) -> None:
        pred = _as_long_tensor(pred, device=self.device)
        counts = confusion_matrix(pred, gt, self.n_pred, self.n_gt, self.ignore_index)
        if self._matrix is None:
            self._matrix = counts
        else:
            self._matrix += counts.to(self._matrix.device)
        self.n_images += int(pred.shape[0]) if pred.ndim >= 3 else 1

    @property
    def matrix(self) -> torch.Tensor:
        if self._matrix is None:
            return torch.zeros(self.n_pred, self.n_gt, dtype=torch.long, device=self.device)
        return self._matrix


# ----------------------------------------------------------------------------------------------------------
# Matching clusters to classes
# ----------------------------------------------------------------------------------------------------------

def _to_numpy_counts(confusion) -> np.ndarray:
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    counts = np.asarray(confusion)
    if counts.ndim != 2:
        raise ValueError(f"a confusion matrix is (K clusters, C classes), got shape {counts.shape}")
    return counts.astype(np.int64, copy=False)


def _same_kind(mapping: np.ndarray, like) -> torch.Tensor | np.ndarray:
    return torch.from_numpy(mapping) if isinstance(like, torch.Tensor) else mapping


def hungarian_match(confusion) -> torch.Tensor | np.ndarray:
    """One-to-one cluster -> class assignment maximising the matched pixel count.

    confusion: (K, C) counts (tensor or array). Returns mapping (K,) int64 (a CPU tensor for tensor input, else an
    array) with the class of every cluster, or -1 for the K - C clusters left unmatched when K > C. With K < C,
    C - K classes receive no cluster.
    """
    counts = _to_numpy_counts(confusion)
    # linear_sum_assignment minimises by default; maximising the counts is the intended direction (PGSeg's bug).
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(counts.shape[0], UNMATCHED, dtype=np.int64)
    mapping[rows] = cols
    return _same_kind(mapping, confusion)


def many_to_one_match(confusion) -> torch.Tensor | np.ndarray:
    """Every cluster -> the class it overlaps most (several clusters may share a class; for over-clustering).

    confusion: (K, C) counts. Returns mapping (K,) int64; clusters without any counted pixel map to -1. Ties go to
    the lowest class id. Restricted to one image's confusion this is also AlignSeg's "highest precision among the
    classes present in the image": precision TP / (TP + FP) shares its denominator (the cluster's pixel count)
    across classes, and absent classes have zero overlap.
    """
    counts = _to_numpy_counts(confusion)
    mapping = counts.argmax(1).astype(np.int64) if counts.shape[1] else np.zeros(counts.shape[0], np.int64)
    mapping[counts.sum(1) == 0] = UNMATCHED
    return _same_kind(mapping, confusion)


def fold_confusion(confusion, mapping, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge clusters into the classes they are mapped to.

    confusion: (K, C) counts; mapping: (K,) class per cluster or -1. Returns
    ``matched`` (C, C): rows = predicted class, columns = ground-truth class; and
    ``unmatched`` (C,): ground-truth pixels that fell into unmatched clusters (false negatives for their class, and
    false positives for no class).
    """
    counts = _to_numpy_counts(confusion)
    mapping = np.asarray(mapping.cpu() if isinstance(mapping, torch.Tensor) else mapping, dtype=np.int64)
    n_classes = counts.shape[1] if n_classes is None else n_classes
    if mapping.shape != (counts.shape[0],):
        raise ValueError(f"mapping has shape {mapping.shape}, expected ({counts.shape[0]},), one class per cluster")
    if mapping.size and (mapping.min() < UNMATCHED or mapping.max() >= n_classes):
        raise ValueError(f"mapping values must lie in -1..{n_classes - 1}, got {mapping.min()}..{mapping.max()}")
    matched = np.zeros((n_classes, counts.shape[1]), dtype=np.int64)
    is_matched = mapping != UNMATCHED
    np.add.at(matched, mapping[is_matched], counts[is_matched])
    return matched, counts[~is_matched].sum(0)


def _per_class_iou(matched: np.ndarray, gt_pixels: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) per class from a folded (C, C) matrix and the full gt pixel counts (C,);
    NaN where the class is neither in the ground truth nor predicted (0 / 0)."""
    tp = np.diag(matched).astype(np.float64)
    union = gt_pixels + matched.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------

def _json_float(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass
class EvalResult:
    """Scores of one evaluation (fractions in [0, 1]).

    ``per_class`` maps class name -> IoU (NaN for a class absent from the ground truth when ``mean_over`` is
    "present"; for the per-image protocol, the mean of the class's per-image IoUs over the images containing it).
    ``mapping`` is the cluster -> class assignment (-1 = unmatched; empty for the per-image protocol, which
    matches each image separately). ``confusion`` is the folded (C, C) matrix, rows = predicted class, columns =
    ground-truth class (summed over images for the per-image protocol); ``unmatched`` (C,) holds the gt pixels
    that fell into unmatched clusters.
    """

    miou: float
    pixel_acc: float
    per_class: dict[str, float]
    n_images: int
    protocol: str
    mean_over: str
    mapping: list[int] = field(default_factory=list)
    confusion: np.ndarray | None = None
    unmatched: np.ndarray | None = None
    miou_excl_first: float | None = None
    n_clusters: int | None = None
    n_classes: int | None = None
    ignore_index: int | None = None
    eval_size: int | tuple[int, int] | None = None
    n_images_skipped: int = 0

    @property
    def n_scored_classes(self) -> int:
        return sum(not math.isnan(v) for v in self.per_class.values())

    def miou_over(self, mean_over: str) -> float:
        """This dataset-level result's mIoU under another averaging (``MEAN_OVER``), from its folded confusion
        matrix: e.g. ``result.miou_over("stego")`` beside a paper that scores the STEGO way. Not defined for the
        per-image protocol (it only averages the classes present in each image)."""
        _check_mean_over(mean_over)
        if self.protocol == "per-image" or self.confusion is None:
            raise ConfigError(f"miou_over needs a dataset-level result with its confusion matrix, not "
                              f"{self.protocol!r}")
        matched = np.asarray(self.confusion, dtype=np.int64)
        unmatched = np.zeros(matched.shape[1], np.int64) if self.unmatched is None else np.asarray(self.unmatched)
        gt_pixels = matched.sum(0) + unmatched
        iou = _per_class_iou(matched, gt_pixels)
        if mean_over == "present":
            return _nanmean(np.where(gt_pixels > 0, iou, np.nan))
        if mean_over == "stego":
            return _nanmean(iou)
        return float(np.nan_to_num(iou, nan=0.0).mean()) if iou.size else math.nan

    def to_dict(self) -> dict:
        """JSON-safe dictionary (NaN -> None, arrays -> lists)."""
        out = {
            "miou": _json_float(self.miou),
            "pixel_acc": _json_float(self.pixel_acc),
            "per_class": {name: _json_float(v) for name, v in self.per_class.items()},
            "n_images": int(self.n_images),
            "protocol": self.protocol,
            "protocol_description": PROTOCOL_DESCRIPTIONS.get(self.protocol, "matching given by the caller"),
            "mean_over": self.mean_over,
            "mean_over_description": MEAN_OVER_DESCRIPTIONS.get(self.mean_over, ""),
            "n_scored_classes": self.n_scored_classes,
            "n_clusters": self.n_clusters,
            "n_classes": self.n_classes,
            "ignore_index": self.ignore_index,
            "eval_size": list(self.eval_size) if isinstance(self.eval_size, tuple) else self.eval_size,
            "mapping": [int(m) for m in self.mapping],
        }
        if self.protocol == "per-image":
            out["miou_excl_first"] = _json_float(self.miou_excl_first)
            out["n_images_skipped"] = int(self.n_images_skipped)
        if self.confusion is not None:
            out["confusion"] = np.asarray(self.confusion).astype(np.int64).tolist()
        if self.unmatched is not None:
            out["unmatched"] = np.asarray(self.unmatched).astype(np.int64).tolist()
        json.dumps(out, allow_nan=False)  # fails here, not in the caller, if anything is not JSON-safe
        return out

    def table(self):
        """pandas DataFrame indexed by class name: iou, gt_pixels, pred_pixels, precision, recall."""
        names = list(self.per_class)
        frame = pd.DataFrame({"iou": [self.per_class[n] for n in names]}, index=pd.Index(names, name="class"))
        if self.confusion is None:
            for column in ("gt_pixels", "pred_pixels", "precision", "recall"):
                frame[column] = np.nan
            return frame
        matched = np.asarray(self.confusion, dtype=np.int64)
        unmatched = np.zeros(matched.shape[1], np.int64) if self.unmatched is None else np.asarray(self.unmatched)
        tp = np.diag(matched).astype(np.float64)
        gt_pixels = matched.sum(0) + unmatched
        pred_pixels = matched.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["gt_pixels"] = gt_pixels
            frame["pred_pixels"] = pred_pixels
            frame["precision"] = np.where(pred_pixels > 0, tp / np.maximum(pred_pixels, 1), np.nan)
            frame["recall"] = np.where(gt_pixels > 0, tp / np.maximum(gt_pixels, 1), np.nan)
        return frame

    def summary(self) -> str:
        """One line, percentages."""
        if self.protocol == "per-image":
            averaged = "mean over images of the mean over the classes present in each"
        else:
            averaged = {"present": f"mean over {self.n_scored_classes} present classes",
                        "stego": f"mean over {self.n_scored_classes} classes present or predicted (STEGO)"}.get(
                self.mean_over, f"mean over all {len(self.per_class)} classes")
        text = f"{self.protocol}: mIoU {100 * self.miou:.2f} ({averaged}), pixel acc {100 * self.pixel_acc:.2f}"
        if self.protocol == "per-image" and self.miou_excl_first is not None:
            text += f", mIoU excl. first present class {100 * self.miou_excl_first:.2f}"
        text += f", {self.n_images} images"
        if self.n_clusters is not None and self.n_classes is not None:
            text += f", K={self.n_clusters} clusters, C={self.n_classes} classes"
        if self.eval_size is not None:
            height, width = (self.eval_size, self.eval_size) if isinstance(self.eval_size, int) else self.eval_size
            text += f", scored at {height}x{width}"
        return text


def _class_names(class_names: Sequence[str] | None, n_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(n_classes)]
    names = [str(n) for n in class_names]
    if len(names) != n_classes:
        raise ConfigError(f"got {len(names)} class names for {n_classes} classes")
    if len(set(names)) != len(names):
        raise ConfigError("class names must be unique")
    return names


def _check_mean_over(mean_over: str) -> None:
    if mean_over not in MEAN_OVER:
        raise ConfigError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}")


def scores_from_confusion(confusion, mapping, class_names: Sequence[str] | None = None,
                          mean_over: str = "present", *, protocol: str = "custom", n_images: int = 0,
                          ignore_index: int | None = None,
                          eval_size: int | tuple[int, int] | None = None) -> EvalResult:
    """mIoU, pixel accuracy and per-class IoU from a (K, C) confusion matrix and a cluster -> class mapping (K,).

    Pixels of clusters mapped to -1 are errors: false negatives for their gt class, false positives for none.
    Pixel accuracy = matched pixels / all counted pixels. ``mean_over``:
    ``"present"``: mIoU averages the classes with at least one gt pixel; ``per_class`` is NaN for the others
        (a class predicted but absent from the ground truth is left out: there is nothing of it to segment).
    ``"stego"``: STEGO's and TransFGU's nanmean of TP / (TP + FP + FN): a class is NaN only when it is neither in
        the ground truth nor predicted, so a class predicted but absent from the ground truth counts as IoU 0.
        Use it beside papers that score this way (gt [0,0,1,1], pred [0,2,1,1], K = C = 3: 0.50, against 0.75
        for ``"present"``).
    ``"all"``: mIoU averages all C classes; a class absent and never predicted counts as 0.
    """
    _check_mean_over(mean_over)
    counts = _to_numpy_counts(confusion)
    n_classes = counts.shape[1]
    names = _class_names(class_names, n_classes)
    matched, unmatched = fold_confusion(counts, mapping, n_classes)
    gt_pixels = counts.sum(0)
    iou = _per_class_iou(matched, gt_pixels)
    if mean_over == "present":
        iou = np.where(gt_pixels > 0, iou, np.nan)
        miou = _nanmean(iou)
    elif mean_over == "stego":                  # NaN only where union = 0 (_per_class_iou)
        miou = _nanmean(iou)
    else:
        iou = np.nan_to_num(iou, nan=0.0)
        miou = float(iou.mean()) if n_classes else math.nan
    total = counts.sum()
    mapping_list = [int(m) for m in np.asarray(mapping.cpu() if isinstance(mapping, torch.Tensor) else mapping)]
    return EvalResult(
        miou=miou, pixel_acc=float(np.trace(matched) / total) if total else math.nan,
        per_class={n: float(v) for n, v in zip(names, iou)}, n_images=int(n_images), protocol=protocol,
        mean_over=mean_over, mapping=mapping_list, confusion=matched, unmatched=unmatched,
        n_clusters=counts.shape[0], n_classes=n_classes, ignore_index=ignore_index, eval_size=eval_size)


# ----------------------------------------------------------------------------------------------------------
# Evaluation over a dataset
# ----------------------------------------------------------------------------------------------------------

def _as_batch(labels: LabelMap, what: str) -> torch.Tensor:
    """(H, W), (B, H, W) or (B, 1, H, W) -> (B, H, W) long."""
    tensor = _as_long_tensor(labels)
    if tensor.ndim == 2:
        return tensor[None]
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.ndim != 3:
        raise DataError(f"{what} must be (H, W) or (B, H, W) label maps, got shape {tuple(tensor.shape)}")
    return tensor


def _label_pairs(preds: Iterable[LabelMap], gts: Iterable[LabelMap],
                 eval_size: int | tuple[int, int] | None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (pred (B, H, W), gt (B, H, W)) long tensors on pred's device, resized (nearest) to ``eval_size``."""
    for index, (pred, gt) in enumerate(zip_longest(preds, gts)):
        if pred is None or gt is None:
            raise DataError(f"there are fewer {'predictions' if pred is None else 'ground-truth maps'} than "
                            f"{'ground-truth maps' if pred is None else 'predictions'} (item {index} is missing)")
        pred = _as_batch(pred, "predictions")
        gt = _as_batch(gt, "ground truth").to(pred.device)
        if eval_size is not None:
            pred, gt = upsample_labels(pred, eval_size), upsample_labels(gt, eval_size)
        if pred.shape != gt.shape:
            raise DataError(f"item {index}: prediction shape {tuple(pred.shape)} differs from ground-truth shape "
                            f"{tuple(gt.shape)}; resize one of them or pass eval_size")
        yield pred, gt


def _dataset_level(preds, gts, n_clusters, n_classes, match, protocol, class_names, ignore_index, mean_over,
                   eval_size, device) -> EvalResult:
    _check_mean_over(mean_over)
    accumulator = ConfusionAccumulator(n_clusters, n_classes, ignore_index, device)
    for pred, gt in _label_pairs(preds, gts, eval_size):
        accumulator.update(pred, gt)
    confusion = accumulator.matrix
    return scores_from_confusion(confusion, match(confusion), class_names, mean_over, protocol=protocol,
                                 n_images=accumulator.n_images, ignore_index=ignore_index, eval_size=eval_size)


def evaluate_hungarian(preds: Iterable[LabelMap], gts: Iterable[LabelMap], n_clusters: int, n_classes: int, *,
                       class_names: Sequence[str] | None = None, ignore_index: int | None = 255,
                       mean_over: str = "present", eval_size: int | tuple[int, int] | None = None,
                       device: torch.device | str | None = None) -> EvalResult:
    """Dataset-level Hungarian protocol: one (K, C) confusion matrix over all (pred, gt) pairs, one-to-one match.

    preds, gts: iterables of integer label maps (H, W) or batches (B, H, W), paired in order.
    """
    return _dataset_level(preds, gts, n_clusters, n_classes, hungarian_match, "hungarian", class_names,
                          ignore_index, mean_over, eval_size, device)


def evaluate_many_to_one(preds: Iterable[LabelMap], gts: Iterable[LabelMap], n_clusters: int, n_classes: int, *,
                         class_names: Sequence[str] | None = None, ignore_index: int | None = 255,
                         mean_over: str = "present", eval_size: int | tuple[int, int] | None = None,
                         device: torch.device | str | None = None) -> EvalResult:
    """Dataset-level many-to-one protocol: one (K, C) confusion matrix, each cluster -> its majority class."""
    return _dataset_level(preds, gts, n_clusters, n_classes, many_to_one_match, "many-to-one", class_names,
                          ignore_index, mean_over, eval_size, device)


def evaluate_per_image_precision(preds: Iterable[LabelMap], gts: Iterable[LabelMap], n_clusters: int,
                                 n_classes: int, *, class_names: Sequence[str] | None = None,
                                 ignore_index: int | None = 255, mean_over: str = "present",
                                 eval_size: int | tuple[int, int] | None = None,
                                 device: torch.device | str | None = None) -> EvalResult:
    """AlignSeg's released protocol (``evaluate/sup_overcluster.py``; pass ``eval_size=100`` to score at 100x100).

    Per image: every cluster -> the class present in the image with the highest precision TP / (TP + FP); IoU for
    each class present in the image; image mIoU = their mean. Results, all means over images:
    ``miou``; ``pixel_acc`` (per-image accuracy); ``miou_excl_first``: the image mean without the lowest present
    class id (usually background), or the full image mean when only one class is present, as in the released code;
    ``per_class``: a class's IoU averaged over the images that contain it.
    Images whose pixels are all ignored are skipped and counted in ``n_images_skipped`` (the released code would
    turn the whole result into NaN). Only ``mean_over="present"`` makes sense here.
    """
    if mean_over != "present":
        raise ConfigError(f"the per-image protocol averages the classes present in each image; "
                          f"mean_over={mean_over!r} is not defined for it (use 'present')")
    names = _class_names(class_names, n_classes)
    image_miou, image_miou_excl_first, image_acc = [], [], []
    class_iou_sum, class_images = np.zeros(n_classes), np.zeros(n_classes, np.int64)
    matched_total = np.zeros((n_classes, n_classes), np.int64)
    skipped = 0
    for pred, gt in _label_pairs(preds, gts, eval_size):
        if device is not None:
            pred, gt = pred.to(device), gt.to(device)
        for pred_image, gt_image in zip(pred, gt):
            counts = _to_numpy_counts(confusion_matrix(pred_image, gt_image, n_clusters, n_classes, ignore_index))
            gt_pixels = counts.sum(0)
            present = np.flatnonzero(gt_pixels)
            if present.size == 0:
                skipped += 1
                continue
            matched, _ = fold_confusion(counts, many_to_one_match(counts), n_classes)
            iou_present = _per_class_iou(matched, gt_pixels)[present]
            image_miou.append(iou_present.mean())
            image_miou_excl_first.append(iou_present[1:].mean() if present.size > 1 else iou_present.mean())
            image_acc.append(np.trace(matched) / gt_pixels.sum())
            class_iou_sum[present] += iou_present
            class_images[present] += 1
            matched_total += matched
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(class_images > 0, class_iou_sum / np.maximum(class_images, 1), np.nan)
    mean_or_nan = (lambda values: float(np.mean(values)) if values else math.nan)
    return EvalResult(
        miou=mean_or_nan(image_miou), pixel_acc=mean_or_nan(image_acc),
        per_class={n: float(v) for n, v in zip(names, per_class)}, n_images=len(image_miou), protocol="per-image",
        mean_over="present", mapping=[], confusion=matched_total, unmatched=np.zeros(n_classes, np.int64),
        miou_excl_first=mean_or_nan(image_miou_excl_first), n_clusters=n_clusters, n_classes=n_classes,
        ignore_index=ignore_index, eval_size=eval_size, n_images_skipped=skipped)


_EVALUATORS = {
    "hungarian": evaluate_hungarian,
    "many-to-one": evaluate_many_to_one,
    "per-image": evaluate_per_image_precision,
}


def evaluate(preds: Iterable[LabelMap], gts: Iterable[LabelMap], n_clusters: int, n_classes: int,
             protocol: str = "hungarian", class_names: Sequence[str] | None = None,
             ignore_index: int | None = 255, mean_over: str = "present",
             eval_size: int | tuple[int, int] | None = None,
             device: torch.device | str | None = None) -> EvalResult:
    """Score cluster predictions against ground truth with one of ``PROTOCOLS``.

    preds: iterable of integer cluster maps (H, W) or batches (B, H, W) with ids in 0..n_clusters-1;
    gts: iterable of the matching class maps with ids in 0..n_classes-1 or ``ignore_index``;
    eval_size: int or (H, W) to resize both (nearest) before scoring, None to score at the given resolution;
    device: where to count (default: each prediction's own device).
    """
    if protocol not in _EVALUATORS:
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; use one of {PROTOCOLS}")
    return _EVALUATORS[protocol](preds, gts, n_clusters, n_classes, class_names=class_names,
                                 ignore_index=ignore_index, mean_over=mean_over, eval_size=eval_size, device=device)
