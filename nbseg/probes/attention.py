"""How good a segmenter is a thresholded map? The 5%-step threshold sweep of AlignSeg §III-A.

AlignSeg picks the threshold of the DINO attention map (and of its prototype similarity maps) "by manually
checking the best IoU between the binary mask and the ground-truth semantic region when adjusting the threshold by
5% each time". :func:`threshold_sweep` does that check for every map and every threshold at once, and the helpers
read off the best threshold per image (an oracle no method has) and over the dataset (one threshold for all).

* :func:`sweep_thresholds` - the 5%-step grid (0.05 .. 1.00 for mass fractions, 0.00 .. 0.95 for values).
* :func:`head_maps` - the CLS attention of every head and their mean, as one stack of named maps.
* :func:`threshold_masks` - binary masks from maps by one rule: keep a fraction of the mass (DINO) or map >= t.
* :func:`threshold_sweep` - the IoU table: one row per (image, map, threshold).
* :func:`sweep_curves` / :func:`summarise_sweep` - mean IoU per threshold, best thresholds per image and dataset.
"""
from __future__ import annotations

import pandas as pd
import torch

from nbseg.saliency import keep_mass_mask, mask_iou, upsample_mask

RULES = ("mass", "value")
STEP = 0.05


def sweep_thresholds(rule: str = "mass", step: float = STEP) -> torch.Tensor:
    """The threshold grid in ``step`` steps: (0, 1] for ``"mass"`` (a fraction of the mass; 0 keeps nothing), [0, 1)
    for ``"value"`` (cosine similarities or normalised scores; 1 keeps at most a perfect match). Rounded to 4 places
    so 0.6 is 0.6 and not 0.6000000000000001."""
    _check_rule(rule)
    n = int(round(1.0 / step))
    steps = torch.arange(1, n + 1) if rule == "mass" else torch.arange(0, n)
    return torch.round(steps.double() * step * 1e4) / 1e4


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}: use 'mass' (keep a fraction of each map's mass, DINO) "
                         "or 'value' (keep where the map is at least the threshold)")


def head_maps(attn: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """CLS attention per head and the head mean, stacked: (N, heads, h, w) -> ((N, heads + 1, h, w), names), the
    names ``["head 0", ..., "head H-1", "mean"]``."""
    maps = torch.cat([attn, attn.mean(dim=1, keepdim=True)], dim=1)
    return maps, [f"head {i}" for i in range(attn.shape[1])] + ["mean"]


def threshold_masks(maps: torch.Tensor, threshold: float, rule: str = "mass") -> torch.Tensor:
    """Binary masks from (..., h, w) maps: ``"mass"`` keeps the top values holding ``threshold`` of each map's mass
    (:func:`nbseg.saliency.keep_mass_mask`; maps must be non-negative), ``"value"`` keeps ``map >= threshold``."""
    _check_rule(rule)
    if rule == "mass":
        return keep_mass_mask(maps, float(threshold))
    return maps >= threshold


def threshold_sweep(maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None,
                    thresholds=None, *, rule: str = "mass", map_names: list[str] | None = None,
                    image_ids: list | None = None, chunk: int = 64):
    """IoU with the ground truth of every map thresholded at every threshold (AlignSeg §III-A, Fig. 2).

    Args:
        maps: (N, h, w) or (N, M, h, w) maps on the patch grid: attention (``rule="mass"``, non-negative) or
            similarities (``rule="value"``). M maps per image (e.g. the heads and their mean, :func:`head_maps`).
        masks: (N, H, W) bool ground truth (foreground, or one class).  valid: (N, H, W) bool pixels to count.
        thresholds: a sequence of thresholds; default :func:`sweep_thresholds` (5% steps).
        map_names: M names (default ``"map 0"`` ...).  image_ids: N ids (default 0..N-1).
    Returns:
        pandas DataFrame, one row per (image, map, threshold): columns ``image``, ``map``, ``threshold``,
        ``iou`` (the mask nearest-upsampled to (H, W), IoU over valid pixels, :func:`nbseg.saliency.mask_iou`).
    """
    _check_rule(rule)
    if maps.ndim == 3:
        maps = maps[:, None]
    if maps.ndim != 4 or masks.ndim != 3 or maps.shape[0] != masks.shape[0]:
        raise ValueError(f"threshold_sweep expects maps (N, [M,] h, w) and masks (N, H, W) for the same N images, "
                         f"got {tuple(maps.shape)} and {tuple(masks.shape)}")
    N, M = maps.shape[:2]
    size = tuple(masks.shape[-2:])
    thresholds = sweep_thresholds(rule) if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)
    names = map_names or [f"map {m}" for m in range(M)]
    ids = list(range(N)) if image_ids is None else list(image_ids)
    if len(names) != M or len(ids) != N:
        raise ValueError(f"got {len(names)} map names for {M} maps and {len(ids)} image ids for {N} images")
    valid = torch.ones_like(masks, dtype=torch.bool) if valid is None else valid
    ious = torch.empty(len(thresholds), N, M)
    for start in range(0, N, chunk):
        part = maps[start:start + chunk].float()
        n = part.shape[0]
        gt = masks[start:start + chunk].bool().repeat_interleave(M, 0)
        ok = valid[start:start + chunk].bool().repeat_interleave(M, 0)
        for t, threshold in enumerate(thresholds.tolist()):
            pred = upsample_mask(threshold_masks(part, threshold, rule).reshape(n * M, *part.shape[-2:]), size)
            ious[t, start:start + n] = mask_iou(pred, gt, ok).reshape(n, M)
    index = pd.MultiIndex.from_product([thresholds.tolist(), ids, names], names=["threshold", "image", "map"])
    table = pd.DataFrame({"iou": ious.reshape(-1).numpy()}, index=index).reset_index()
    return table[["image", "map", "threshold", "iou"]]


def sweep_curves(table):
    """Mean IoU over images for each threshold (rows) and map (columns): the IoU-vs-threshold curves."""
    return table.pivot_table(index="threshold", columns="map", values="iou", aggfunc="mean", sort=False)


def best_per_image(table):
    """Each image's best threshold and IoU per map (the first, i.e. smallest, threshold among ties): columns
    ``image``, ``map``, ``threshold``, ``iou``."""
    best = table.loc[table.groupby(["map", "image"], sort=False)["iou"].idxmax()]
    return best.reset_index(drop=True)


def summarise_sweep(table):
    """One row per map: the best single threshold over the dataset and its mean IoU, against the mean IoU when
    every image gets its own best threshold (an oracle), and the spread of those per-image thresholds.

    Columns ``map``, ``dataset_threshold``, ``dataset_iou``, ``per_image_best_iou``, ``per_image_threshold_median``,
    ``per_image_threshold_iqr``.
    """
    curves = sweep_curves(table)
    per_image = best_per_image(table).groupby("map", sort=False)
    rows = []
    for name in curves.columns:
        q1, q2, q3 = per_image.get_group(name)["threshold"].quantile([0.25, 0.5, 0.75]).tolist()
        rows.append({"map": name, "dataset_threshold": float(curves[name].idxmax()),
                     "dataset_iou": float(curves[name].max()),
                     "per_image_best_iou": float(per_image.get_group(name)["iou"].mean()),
                     "per_image_threshold_median": q2, "per_image_threshold_iqr": q3 - q1})
    return pd.DataFrame(rows)
