"""Region classification (DCN, Li et al. 2022, Sec. 4.1-4.4): region embeddings from a frozen ViT, foreground
detection from its attention, k-means (Table 1) and weighted k-NN (Table 2) region classification, the retrieval
grid (Fig. 5) and the region-count analysis.

A *region* is the set of pixels of one image that a region proposer (DCN's hard assignment) gives one id; the
regions of a split are listed in a :class:`Regions` table (one row per region: image, id, area, box, and, once
computed, embedding, foreground score and flag, ground-truth label).

* :func:`region_embeddings` - Sec. 4.1.2: crop the image to the region's box, resize the crop to ``size``, set the
  pixels outside the region to 0 *after* normalisation, take the backbone's CLS token; the backbone runs on
  batches of ``batch_size`` crops.
* :func:`foreground_scores` / :func:`detect_foreground` - Sec. 4.1.2: per-pixel attention = minimum over the last
  block's heads (the text; its argument reads as a maximum, and the mean is a third choice: ``DCNConfig.foreground``);
  a region's score = the sum over its pixels; 2-means on the scores of one image's regions; the cluster with the
  higher scores is foreground.
* :func:`kmeans_table` - Table 1: k-means of the foreground regions' embeddings into C classes, background regions
  kept as one more cluster, dataset-level Hungarian mIoU (:mod:`nbseg.evaluation`), one k-means per seed -> mean and
  std over seeds.
* :func:`knn_table` - Table 2: training regions labelled by the ground-truth class they overlap most; each query
  region gets the class of the highest summed cosine over its k most similar training regions (weighted k-NN).
* :func:`retrieval_figure` (Fig. 5), :func:`region_count_correlation` (regions per image vs classes per image).
* :func:`collect_regions` - the whole per-split pipeline for a trained region proposer and its feature cache.

Choices the paper leaves open, and ours:

1. The image is cut to the region's box ``[x0, x1) x [y0, y1)`` (nothing outside the box leaks in) and resized
   bilinearly (antialiased when shrinking) to ``size`` x ``size``, aspect ratio not kept; the region mask is cut
   and resized the same way and thresholded at 0.5.
2. "Mask after normalisation" = the masked pixels are 0 in the normalised image, i.e. the mean colour in [0, 1]
   (:meth:`Backbone.extract` normalises, so we fill with the backbone's mean).
3. ``size``: 224 for DINO ViTs (their training size, the paper's value); 64 for the embedded backbone (its DINO
   global-crop size).
4. The attention map (token grid) is upsampled bilinearly to the region map's size before the per-region sums.
5. 2-means on one image's scores is solved exactly (1-D: the best threshold between sorted scores). An image with a
   single region, or whose regions all score the same, has all its regions foreground.
6. Table 1: k-means (cosine, k-means++ seeding, one initialisation per seed) on the L2-normalised foreground
   embeddings; background regions form cluster 0 and the Hungarian matching runs over C + 1 clusters and all
   classes (background included), over the whole split. std is numpy's (ddof 0).
7. Table 2: every region takes part (no foreground detection: the training labels include background); a training
   region's label is the ground-truth class with the most pixels in it (ignored pixels not counted; regions without
   a labelled pixel are left out); the weights are the cosine similarities; the prediction is scored pixel-wise
   with identity matching (mIoU over the classes present, pixel accuracy).

Length: over 400 lines because the region table and every stage of DCN's Sec. 4 that fills or reads it
(crops, embeddings, foreground, Tables 1-2, Fig. 5, counts) are kept together, in the paper's order.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from nbseg.cluster import kmeans
from nbseg.evaluation import ConfusionAccumulator, evaluate, scores_from_confusion
from nbseg.progress import tqdm

IGNORE_INDEX = 255


# ----------------------------------------------------------------------------------------------------------
# The region table
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Regions:
    """One row per region. image (R,) image index; region (R,) id in that image's region map; area (R,) pixels;
    box (R, 4) ``x0, y0, x1, y1`` (exclusive ends); optional: embedding (R, D), score (R,) foreground score,
    foreground (R,) bool, label (R,) ground-truth class (-1: none)."""

    image: torch.Tensor
    region: torch.Tensor
    area: torch.Tensor
    box: torch.Tensor
    embedding: torch.Tensor | None = None
    score: torch.Tensor | None = None
    foreground: torch.Tensor | None = None
    label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def select(self, keep: torch.Tensor) -> "Regions":
        """The rows where ``keep`` (R,) bool is true (or the rows ``keep`` lists)."""
        return Regions(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[keep]
                          for f in fields(self)})

    def per_image(self, n_images: int) -> torch.Tensor:
        """Number of regions of each of ``n_images`` images: (n_images,) int64."""
        return torch.bincount(self.image, minlength=n_images)


def _maps(region_maps) -> list[torch.Tensor]:
    return [torch.as_tensor(m) for m in region_maps]


def list_regions(region_maps: Sequence[torch.Tensor], min_area: int = 1) -> Regions:
    """The regions of label maps (a (N, H, W) tensor or N maps (H_i, W_i)): every id with at least ``min_area``
    pixels is a region."""
    image, region, area, box = [], [], [], []
    for n, m in enumerate(_maps(region_maps)):
        ids, counts = torch.unique(m, return_counts=True)
        for rid, count in zip(ids.tolist(), counts.tolist()):
            if count < min_area:
                continue
            mask = m == rid
            rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
            image.append(n)
            region.append(rid)
            area.append(count)
            box.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
    long = dict(dtype=torch.long)
    return Regions(image=torch.tensor(image, **long), region=torch.tensor(region, **long),
                   area=torch.tensor(area, **long), box=torch.tensor(box, **long).reshape(-1, 4))


def paint(region_maps: Sequence[torch.Tensor], regions: Regions, values: torch.Tensor, fill: int = 0
          ) -> list[torch.Tensor]:
    """Per-pixel maps from per-region values: pixel -> ``values`` of its region (``fill`` where no row of
    ``regions`` covers it). Returns one (H_i, W_i) int64 map per image."""
    values = torch.as_tensor(values).long()
    out = []
    for n, m in enumerate(_maps(region_maps)):
        rows = torch.nonzero(regions.image == n).flatten()
        lut = torch.full((int(m.max()) + 1,), fill, dtype=torch.long)
        keep = regions.region[rows] <= int(m.max())
        lut[regions.region[rows][keep]] = values[rows][keep]
        out.append(lut[m.long()])
    return out


# ----------------------------------------------------------------------------------------------------------
# Region embeddings (Sec. 4.1.1 / 4.1.2)
# ----------------------------------------------------------------------------------------------------------

def masked_region_crops(image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, size: int,
                        fill: torch.Tensor) -> torch.Tensor:
    """Crops of one image to each region's box, resized to ``size``, pixels outside the region set to ``fill``.

    Args:
        image: (3, H, W) float in [0, 1].
        masks: (R, H, W) bool, one region per row.
        boxes: (R, 4) ``x0, y0, x1, y1`` pixel boxes (exclusive ends).
        size: output side S.
        fill: (3,) colour of the masked pixels (the backbone's mean: 0 after normalisation).
    Returns:
        (R, 3, S, S) float.
    """
    crops, inside = [], []
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        crop = image[None, :, y0:y1, x0:x1].float()
        soft = mask[None, None, y0:y1, x0:x1].float()
        big = crop.shape[-1] > size or crop.shape[-2] > size
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=big))
        soft = F.interpolate(soft, size=(size, size), mode="bilinear", align_corners=False, antialias=big)
        keep = soft > 0.5
        inside.append(keep if keep.any() else soft > 0)      # a region thinner than a pixel of the crop
    crops, inside = torch.cat(crops), torch.cat(inside)
    return torch.where(inside, crops, fill.to(crops).view(1, 3, 1, 1))


def region_embeddings(backbone, images: Sequence[torch.Tensor], region_maps: Sequence[torch.Tensor],
                      regions: Regions, *, size: int, batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """CLS tokens of the masked region crops (Sec. 4.1.2): (R, D) float32 on the CPU, rows in ``regions`` order.

    Args:
        backbone: a frozen :class:`nbseg.backbones.Backbone`.
        images: N images (3, H_i, W_i) in [0, 1] (uint8 images are divided by 255).
        region_maps: N maps (H_i, W_i) of region ids.
        regions: the rows to embed (e.g. :func:`list_regions` of the maps).
        size: crop side, a multiple of the patch size.
        batch_size: crops per backbone call.
    """
    if size % backbone.patch_size:
        raise ValueError(f"region crop size {size} is not a multiple of the patch size {backbone.patch_size}")
    fill = backbone.mean.reshape(3).cpu()
    out = torch.empty(len(regions), backbone.dim)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []          # (row indices, crops)

    def flush() -> None:
        rows = torch.cat([r for r, _ in pending])
        out[rows] = backbone.extract(torch.cat([c for _, c in pending])).cls.float().cpu()
        pending.clear()

    maps = _maps(region_maps)
    bar = tqdm(total=len(regions), desc=f"region embeddings ({backbone.name})", unit="region", disable=not progress)
    for n in torch.unique(regions.image).tolist():
        rows = torch.nonzero(regions.image == n).flatten()
        image = images[n]
        image = image.float() / 255.0 if not image.is_floating_point() else image.float()
        masks = maps[n][None] == regions.region[rows][:, None, None]
        pending.append((rows, masked_region_crops(image, masks, regions.box[rows], size, fill)))
        if sum(len(r) for r, _ in pending) >= batch_size:
            bar.update(sum(len(r) for r, _ in pending))
            flush()
    if pending:
        bar.update(sum(len(r) for r, _ in pending))
        flush()
    bar.close()
    return out


# ----------------------------------------------------------------------------------------------------------
# Foreground detection (Sec. 4.1.2)
# ----------------------------------------------------------------------------------------------------------

def min_head_attention(attn: torch.Tensor) -> torch.Tensor:
    """Per-pixel attention: the minimum over the heads. attn (N, heads, h, w) -> (N, h, w)."""
    return head_reduced_attention(attn, "min")


# Sec. 4.1.2 says "the minimum of each attention head" but argues that a foreground pixel "appears in at least one
# head", which is a maximum: both readings, and the mean, are a config key (DCNConfig.foreground).
HEAD_REDUCTIONS = {"min": lambda a: a.amin(1), "max": lambda a: a.amax(1), "mean": lambda a: a.mean(1)}


def head_reduced_attention(attn: torch.Tensor, heads: str = "min") -> torch.Tensor:
    """Per-pixel attention reduced over the heads (``heads``: "min" | "max" | "mean"). (N, heads, h, w) -> (N, h, w)."""
    if heads not in HEAD_REDUCTIONS:
        raise ValueError(f"head reduction {heads!r} is not one of {list(HEAD_REDUCTIONS)}")
    return HEAD_REDUCTIONS[heads](torch.as_tensor(attn).float())


# How regions are split into foreground and background (``DCNConfig.foreground``; ``nbseg ablate dcn``):
# "min-head" is the paper's printed rule (Sec. 4.1.2); "max-head" its argument's reading; "mean-head" averages the
# heads; "all" skips the detection (every region foreground, so Table 1's k-means sees the background regions too).
FOREGROUND_RULES = ("min-head", "max-head", "mean-head", "all")
HEAD_RULES = FOREGROUND_RULES[:3]            # the rules that read the attention (DCN evaluation reports all three)


def foreground_scores(attn: torch.Tensor, region_maps: Sequence[torch.Tensor], regions: Regions,
                      heads: str = "min") -> torch.Tensor:
    """A region's foreground score: the sum, over its pixels, of the head-minimum (``heads="min"``, the paper's
    text), head-maximum (``"max"``, its argument) or head-mean (``"mean"``) attention upsampled (bilinear) to the
    region map's size. attn (N, heads, h, w) for the N images -> (R,) float32."""
    attn = torch.as_tensor(attn)
    per_pixel = head_reduced_attention(attn, heads)
    scores = torch.zeros(len(regions))
    for n, m in enumerate(_maps(region_maps)):
        rows = torch.nonzero(regions.image == n).flatten()
        if rows.numel() == 0:
            continue
        up = F.interpolate(per_pixel[n][None, None], size=tuple(m.shape), mode="bilinear", align_corners=False)[0, 0]
        sums = torch.bincount(m.flatten().long(), weights=up.flatten().double(), minlength=int(m.max()) + 1)
        scores[rows] = sums[regions.region[rows]].float()
    return scores


def two_means_split(scores: torch.Tensor) -> torch.Tensor:
    """Exact 2-means of 1-D values: (n,) -> (n,) bool, True for the cluster with the higher values.

    The optimal 1-D 2-means partition is a threshold between sorted values; every threshold between two distinct
    values is tried and the one with the least within-cluster sum of squares wins. One value, or all equal: all True.
    """
    v = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if v.numel() < 2 or bool((v == v[0]).all()):
        return torch.ones(v.numel(), dtype=torch.bool)
    s, _ = torch.sort(v)
    best, threshold = None, None
    for t in range(1, s.numel()):
        if s[t] == s[t - 1]:
            continue
        low, high = s[:t], s[t:]
        sse = float(((low - low.mean()) ** 2).sum() + ((high - high.mean()) ** 2).sum())
        if best is None or sse < best:
            best, threshold = sse, s[t]
    return v >= threshold


def foreground_by_rule(attn: torch.Tensor, region_maps: Sequence[torch.Tensor], regions: Regions, rule: str
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (R,) and foreground flags (R,) bool of ``regions`` under a :data:`FOREGROUND_RULES` rule:
    head-reduced attention summed per region, then per-image 2-means ("all": every region foreground)."""
    if rule not in FOREGROUND_RULES:
        raise ValueError(f"foreground rule {rule!r} is not one of {list(FOREGROUND_RULES)}")
    scores = foreground_scores(attn, region_maps, regions, heads="min" if rule == "all" else rule.split("-")[0])
    if rule == "all":
        return scores, torch.ones(len(regions), dtype=torch.bool)
    scored = regions.select(torch.ones(len(regions), dtype=torch.bool))
    scored.score = scores
    return scores, detect_foreground(scored)


def detect_foreground(regions: Regions) -> torch.Tensor:
    """Per image, 2-means on its regions' ``score``; the higher cluster is foreground. -> (R,) bool."""
    if regions.score is None:
        raise ValueError("regions have no foreground scores; set regions.score = foreground_scores(...) first")
    fg = torch.zeros(len(regions), dtype=torch.bool)
    for n in torch.unique(regions.image).tolist():
        rows = torch.nonzero(regions.image == n).flatten()
        fg[rows] = two_means_split(regions.score[rows])
    return fg


# ----------------------------------------------------------------------------------------------------------
# Ground truth per region
# ----------------------------------------------------------------------------------------------------------

def majority_labels(region_maps: Sequence[torch.Tensor], gt_maps: Sequence[torch.Tensor], regions: Regions,
                    n_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The ground-truth class with the most pixels in each region (ignored pixels not counted); -1 for a region
    without labelled pixels. -> (R,) int64."""
    labels = torch.full((len(regions),), -1, dtype=torch.long)
    for n, (m, gt) in enumerate(zip(_maps(region_maps), _maps(gt_maps))):
        rows = torch.nonzero(regions.image == n).flatten()
        if rows.numel() == 0:
            continue
        gt = gt.long()
        keep = (gt != ignore_index) & (gt >= 0)
        k = int(m.max()) + 1
        counts = torch.bincount(m.long()[keep] * n_classes + gt[keep], minlength=k * n_classes).reshape(k, n_classes)
        region_counts = counts[regions.region[rows]]
        labels[rows] = torch.where(region_counts.sum(1) > 0, region_counts.argmax(1), -1)
    return labels


# ----------------------------------------------------------------------------------------------------------
# Table 1: k-means on foreground region embeddings
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SeedTable:
    """Scores of one procedure repeated over seeds: per-seed :class:`EvalResult` and the mean / std of mIoU and
    pixel accuracy (fractions)."""

    results: list
    seeds: list[int]

    @property
    def miou(self) -> np.ndarray:
        return np.array([r.miou for r in self.results])

    @property
    def pixel_acc(self) -> np.ndarray:
        return np.array([r.pixel_acc for r in self.results])

    def summary(self) -> dict:
        """Means and stds over the seeds; ``miou_stego_*``: the STEGO averaging (a predicted class absent from the
        ground truth scores 0), for tables beside the paper's numbers."""
        stego = np.array([r.miou_over("stego") for r in self.results])
        return {"miou_mean": float(self.miou.mean()), "miou_std": float(self.miou.std()),
                "miou_stego_mean": float(stego.mean()), "miou_stego_std": float(stego.std()),
                "pixel_acc_mean": float(self.pixel_acc.mean()), "pixel_acc_std": float(self.pixel_acc.std()),
                "miou_per_seed": self.miou.tolist(), "seeds": list(self.seeds)}


def kmeans_region_labels(embeddings: torch.Tensor, foreground: torch.Tensor, n_fg_classes: int, seed: int,
                         n_init: int = 1) -> torch.Tensor:
    """Cluster ids per region: 0 for background regions, 1..C from k-means (cosine) of the foreground embeddings."""
    values = torch.zeros(foreground.shape[0], dtype=torch.long)
    if int(foreground.sum()) < n_fg_classes:
        raise ValueError(f"only {int(foreground.sum())} foreground regions for k-means into {n_fg_classes} classes: "
                         "use more images or fewer classes")
    labels, _, _ = kmeans(embeddings[foreground], n_fg_classes, seed=seed, n_init=n_init, metric="cosine")
    values[foreground] = labels.cpu() + 1
    return values


def kmeans_table(regions: Regions, region_maps: Sequence[torch.Tensor], gt_maps: Sequence[torch.Tensor], *,
                 n_classes: int, n_fg_classes: int | None = None, seeds: Sequence[int] = range(10),
                 class_names: Sequence[str] | None = None, ignore_index: int = IGNORE_INDEX) -> SeedTable:
    """Table 1: k-means into ``n_fg_classes`` (default ``n_classes - 1``) on the foreground regions, background
    regions as cluster 0, Hungarian over the whole split; one run per seed."""
    if regions.embedding is None or regions.foreground is None:
        raise ValueError("regions need .embedding and .foreground (region_embeddings, detect_foreground) first")
    n_fg = n_classes - 1 if n_fg_classes is None else n_fg_classes
    results = []
    for seed in seeds:
        values = kmeans_region_labels(regions.embedding, regions.foreground, n_fg, seed)
        preds = paint(region_maps, regions, values)
        results.append(evaluate(preds, _maps(gt_maps), n_clusters=n_fg + 1, n_classes=n_classes,
                                protocol="hungarian", class_names=class_names, ignore_index=ignore_index))
    return SeedTable(results=results, seeds=list(seeds))


# ----------------------------------------------------------------------------------------------------------
# Table 2: weighted k-NN
# ----------------------------------------------------------------------------------------------------------

def knn_classify(gallery: torch.Tensor, gallery_labels: torch.Tensor, queries: torch.Tensor, k: int,
                 n_classes: int, chunk: int = 4096) -> torch.Tensor:
    """Weighted k-NN: each query's class = argmax over classes of the summed cosine similarity of its ``k`` most
    similar gallery rows of that class. gallery (G, D), gallery_labels (G,) in [0, C), queries (Q, D) -> (Q,)."""
    if gallery.shape[0] == 0:
        raise ValueError("the k-NN gallery is empty")
    g = F.normalize(gallery.float(), dim=1)
    k = min(k, g.shape[0])
    out = []
    for start in range(0, queries.shape[0], chunk):
        sims = F.normalize(queries[start:start + chunk].float(), dim=1) @ g.T
        top, idx = sims.topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], n_classes).scatter_add_(1, gallery_labels[idx], top)
        out.append(votes.argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def knn_table(gallery: Regions, queries: Regions, query_maps: Sequence[torch.Tensor],
              gt_maps: Sequence[torch.Tensor], *, n_classes: int, ks: Sequence[int] = (1, 3, 5, 10),
              class_names: Sequence[str] | None = None, ignore_index: int = IGNORE_INDEX) -> dict:
    """Table 2: for each k, the weighted k-NN class of every query region painted on its pixels and scored with
    identity matching. ``gallery`` needs ``embedding`` and ``label``; queries need ``embedding``.
    Returns ``{k: EvalResult}``."""
    labelled = gallery.select(gallery.label >= 0)
    out = {}
    for k in ks:
        predicted = knn_classify(labelled.embedding, labelled.label, queries.embedding, k, n_classes)
        acc = ConfusionAccumulator(n_classes, n_classes, ignore_index)
        for pred, gt in zip(paint(query_maps, queries, predicted), _maps(gt_maps)):
            acc.update(pred, gt)
        out[k] = scores_from_confusion(acc.matrix, np.arange(n_classes), class_names, protocol=f"{k}-NN",
                                       n_images=acc.n_images, ignore_index=ignore_index)
    return out


# ----------------------------------------------------------------------------------------------------------
# Figures and analysis
# ----------------------------------------------------------------------------------------------------------

def region_view(image: torch.Tensor, mask: torch.Tensor, box: Sequence[int], dim: float = 0.25) -> np.ndarray:
    """A region for display: the image cropped to ``box``, pixels outside ``mask`` dimmed. -> (h, w, 3) in [0, 1]."""
    x0, y0, x1, y1 = [int(v) for v in box]
    image = image.float() / 255.0 if not image.is_floating_point() else image.float()
    crop = image[:, y0:y1, x0:x1].permute(1, 2, 0).clamp(0, 1).numpy()
    inside = np.asarray(mask[y0:y1, x0:x1])[..., None]
    return np.where(inside, crop, dim * crop)


def retrieval_figure(queries: dict, gallery: dict, *, title: str, k: int = 5, n_queries: int = 6, seed: int = 0,
                     class_names: Sequence[str] | None = None, query_rows: Sequence[int] | None = None):
    """Fig. 5: query regions and their ``k`` most similar gallery regions (cosine of the region embeddings).

    ``queries`` and ``gallery`` are ``{"regions": Regions (with embedding; label optional), "images": N images
    (3, H, W), "maps": N region maps}``. ``query_rows`` picks the query regions (default: ``n_queries`` drawn with
    ``seed``, foreground ones when flagged). Panel titles give the region's ground-truth class (when labelled) and the
    similarity. Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    if not title or not str(title).strip():
        raise ValueError("a figure needs a title naming the backbone, the weights and the dataset behind it")
    q, g = queries["regions"], gallery["regions"]
    if query_rows is None:
        pool = torch.nonzero(q.foreground).flatten() if q.foreground is not None and q.foreground.any() \
            else torch.arange(len(q))
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n_queries]
        query_rows = pool[pick].tolist()
    sims = F.normalize(q.embedding[list(query_rows)].float(), dim=1) @ F.normalize(g.embedding.float(), dim=1).T
    top, idx = sims.topk(min(k, len(g)), dim=1)

    def name(regions: Regions, row: int) -> str:
        if regions.label is None or int(regions.label[row]) < 0:
            return ""
        c = int(regions.label[row])
        return class_names[c] if class_names is not None else str(c)

    def draw(ax, side: dict, row: int, text: str) -> None:
        regions = side["regions"]
        n, rid = int(regions.image[row]), int(regions.region[row])
        ax.imshow(region_view(side["images"][n], torch.as_tensor(side["maps"][n]) == rid, regions.box[row]))
        ax.set_title(text, fontsize="small")

    rows, cols = len(query_rows), 1 + top.shape[1]
    fig = Figure(figsize=(1.9 * cols, 1.9 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(title)
    for r, row in enumerate(query_rows):
        draw(axes[r, 0], queries, row, f"query {name(q, row)}".strip())
        for c in range(top.shape[1]):
            grow = int(idx[r, c])
            draw(axes[r, c + 1], gallery, grow, f"{name(g, grow)} {float(top[r, c]):.2f}".strip())
    return fig


def region_count_correlation(region_maps: Sequence[torch.Tensor], gt_maps: Sequence[torch.Tensor], *,
                             ignore_index: int = IGNORE_INDEX, min_area: int = 1, min_fraction: float = 0.0) -> dict:
    """Regions per image (ids with at least ``min_area`` pixels and at least ``min_fraction`` of the image's pixels)
    against ground-truth classes per image (ignored pixels not counted): Pearson and Spearman correlation over the
    images, and the mean regions per class count."""
    n_regions, n_classes = [], []
    for m, gt in zip(_maps(region_maps), _maps(gt_maps)):
        _, counts = torch.unique(m, return_counts=True)
        n_regions.append(int((counts >= max(min_area, min_fraction * m.numel())).sum()))
        gt = gt[(gt != ignore_index) & (gt >= 0)]
        n_classes.append(int(torch.unique(gt).numel()))
    r, c = np.array(n_regions, float), np.array(n_classes, float)
    constant = r.size < 2 or r.std() == 0 or c.std() == 0
    by_count = {int(v): float(r[c == v].mean()) for v in np.unique(c)}
    return {"pearson": float("nan") if constant else float(pearsonr(c, r)[0]),
            "spearman": float("nan") if constant else float(spearmanr(c, r)[0]),
            "mean_regions": float(r.mean()) if r.size else float("nan"),
            "mean_regions_by_gt_classes": by_count, "n_regions": n_regions, "n_gt_classes": n_classes}


# ----------------------------------------------------------------------------------------------------------
# The per-split pipeline
# ----------------------------------------------------------------------------------------------------------

@dataclass
class RegionSplit:
    """A split seen through a region proposer: images (uint8 (3, H, W)), ground truth (H, W), region maps (H, W),
    the region table, the cached attention, a description for titles and the image ids."""

    images: list
    gt: list
    maps: list
    regions: Regions
    attn: torch.Tensor
    class_names: list = field(default_factory=list)
    description: str = ""
    ids: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """``{"regions", "images", "maps"}`` for :func:`retrieval_figure`."""
        return {"regions": self.regions, "images": self.images, "maps": self.maps}


def collect_regions(predict_features: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor], backbone, dataset,
                    cache, *, region_size: int, limit: int | None = None, batch_size: int = 64,
                    embed: bool = True, progress: bool = True, foreground: str = "min-head") -> RegionSplit:
    """Regions of ``dataset`` (first ``limit`` images) for a region proposer that works on cached features.

    ``predict_features(patches (B, h, w, D), (H, W)) -> (B, H, W)`` region ids (e.g. :meth:`DCN.predict_features`);
    ``cache``: the :class:`nbseg.features.cache.FeatureCache` of ``dataset`` (same ids, same order). Computes the region
    maps at each image's own size, the region table with foreground scores and flags, the ground-truth majority
    label of every region and (``embed``) the region embeddings of ``backbone`` at ``region_size``.
    ``foreground``: one of :data:`FOREGROUND_RULES` (the paper's ``"min-head"`` by default).
    """
    if foreground not in FOREGROUND_RULES:
        raise ValueError(f"foreground rule {foreground!r} is not one of {list(FOREGROUND_RULES)}")
    n = len(cache) if limit is None else min(limit, len(cache))
    if list(cache.ids[:n]) != list(dataset.ids[:n]):
        raise ValueError(f"the feature cache {cache.path} holds other images than {dataset.describe()}: build the "
                         "cache of this dataset")
    images, gt, maps = [], [], []
    for start in range(0, n, batch_size):
        samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
        images += [(s.image * 255).round().to(torch.uint8) for s in samples]
        gt += [s.label for s in samples]
        patches = torch.from_numpy(np.asarray(cache.patches[start:start + len(samples)], np.float32))
        sizes = [tuple(s.image.shape[-2:]) for s in samples]
        if len(set(sizes)) == 1:                          # one decoder call for a batch of same-size images
            maps += list(predict_features(patches, sizes[0]).cpu())
        else:
            maps += [predict_features(patches[j:j + 1], size)[0].cpu() for j, size in enumerate(sizes)]
    regions = list_regions(maps)
    attn = torch.from_numpy(np.asarray(cache.attn[:n], np.float32))
    regions.score, regions.foreground = foreground_by_rule(attn, maps, regions, foreground)
    if all(g is not None for g in gt):
        regions.label = majority_labels(maps, gt, regions, dataset.num_classes, dataset.ignore_index)
    if embed:
        regions.embedding = region_embeddings(backbone, images, maps, regions, size=region_size,
                                              batch_size=batch_size, progress=progress)
    return RegionSplit(images=images, gt=gt, maps=maps, regions=regions, attn=attn,
                       class_names=list(dataset.class_names), description=cache.describe(), ids=list(cache.ids[:n]))


__all__ = ["FOREGROUND_RULES", "HEAD_RULES", "Regions", "RegionSplit", "SeedTable", "list_regions", "paint",
           "masked_region_crops", "region_embeddings", "min_head_attention", "head_reduced_attention",
           "HEAD_REDUCTIONS", "foreground_scores", "two_means_split", "detect_foreground", "foreground_by_rule",
           "majority_labels", "kmeans_region_labels", "kmeans_table", "knn_classify", "knn_table", "region_view",
           "retrieval_figure", "region_count_correlation", "collect_regions"]
