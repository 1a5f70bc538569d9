"""Prototypes from attention-masked patches: what one image's class embedding segments elsewhere (AlignSeg §III).

AlignSeg probes frozen ViT features with *prototypes*: the mean embedding of the patches that the thresholded CLS
attention highlights in one image.

* §III-A, Fig. 2 (:func:`semantic_consistency`): a prototype from one image segments the same class in other images
  by thresholded cosine similarity; the best threshold comes from the 5%-step sweep. As more images are added
  the IoU drops: embeddings of one class scatter across images.
* §III-B, Fig. 3 (:func:`semantic_quality`): two class prototypes from two other images plus a background prototype
  (the reversed attention mask of the first) segment an image by argmax; a local crop re-segmented at full input
  size is compared with the global view, inside and outside the salient region.
* Table IV (:func:`prototype_class_similarity`): softmax-normalised similarity between a set of prototypes and the
  classes' mean embeddings.

Building blocks: :func:`masked_prototypes`, :func:`attention_prototypes`, :func:`similarity_maps` (the shared
:func:`nbseg.prototype_scores.prototype_cosine_maps`),
:func:`prototype_segmentation`, :func:`class_pixel_shares`.

Length: over 400 lines because Sec. III-A and III-B (and Table IV) share these building blocks; each study is a
section of its own below.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from nbseg.angles import class_centres, pixel_weighted_embeddings
from nbseg.cluster import upsample_labels
from nbseg.evaluation import confusion_matrix, scores_from_confusion
from nbseg.probes.attention import threshold_masks, threshold_sweep
from nbseg.prototype_scores import prototype_cosine_maps, segment_by_argmax
from nbseg.saliency import saliency, upsample_mask


# ----------------------------------------------------------------------------------------------------------------
# building blocks


def masked_prototypes(patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean embedding of the masked patches of each image (AlignSeg §III-A: "we average the embedding of patches
    highlighted by the attention map as a semantic prototype").

    Args:
        patches: (N, h, w, D).  masks: (N, h, w) bool.
    Returns:
        (N, D) float32. An image with an empty mask is an error naming it.
    """
    counts = masks.flatten(1).sum(1)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"images {empty[:8]} have empty masks: no patch to average into a prototype (raise the "
                         "kept attention mass, or use the reversed mask of another image)")
    sums = (patches.float() * masks[..., None].float()).flatten(1, 2).sum(1)
    return sums / counts[:, None].float()


def attention_prototypes(features, indices, *, fraction: float = 0.6, method: str = "dino",
                         reverse: bool = False) -> torch.Tensor:
    """Prototypes of images ``indices`` from their saliency masks (:func:`nbseg.saliency.saliency` on the CLS
    attention, keeping ``fraction`` of the mass); ``reverse=True`` averages the patches *outside* the mask (AlignSeg's
    background prototype). Returns (len(indices), D)."""
    index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    masks = saliency(features.attn[index], method, fraction)
    return masked_prototypes(features.patches[index], ~masks if reverse else masks)


similarity_maps = prototype_cosine_maps          # (N, h, w, D) x (P, D) or (N, P, D) -> (N, P, h, w) cosines


def prototype_segmentation(patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Each patch to its most similar prototype (AlignSeg §III-B "segment regions by argmax"; DCN Eq. (6)).
    patches (N, h, w, D), prototypes (P, D) or (N, P, D) -> (N, h, w) prototype ids."""
    return segment_by_argmax(prototype_cosine_maps(patches, prototypes))


def class_pixel_shares(labels: torch.Tensor, n_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Share of each image's pixels held by each class: (N, H, W) -> (N, C) (ignored pixels belong to none)."""
    flat = labels.flatten(1)
    keep = (flat != ignore_index) & (flat >= 0) & (flat < n_classes)
    rows = torch.arange(flat.shape[0])[:, None].expand_as(flat)
    counts = torch.zeros(flat.shape[0], n_classes).index_put_((rows[keep], flat[keep]), torch.ones(()),
                                                              accumulate=True)
    return counts / flat.shape[1]


def thing_classes(class_names: list[str]) -> list[int]:
    """The classes an attention prototype can stand for: all but a first class named ``background``."""
    start = 1 if class_names and class_names[0] == "background" else 0
    return list(range(start, len(class_names)))


# ----------------------------------------------------------------------------------------------------------------
# §III-A, Fig. 2: semantic consistency between patches


def class_images(shares: torch.Tensor, class_id: int, min_share: float = 0.01, source: int | None = None
                 ) -> torch.Tensor:
    """Images where ``class_id`` covers at least ``min_share`` of the pixels: the prototype's ``source`` first
    (default: the image where the class covers most), then the others in dataset order.
    ``shares``: (N, C) from :func:`class_pixel_shares`."""
    present = torch.nonzero(shares[:, class_id] >= min_share).flatten()
    if source is None:
        if len(present) == 0:
            return present
        source = int(present[shares[present, class_id].argmax()])
    elif shares[source, class_id] == 0:
        raise ValueError(f"image {source} holds no pixel of class {class_id}: pick a source image that shows it")
    return torch.cat([torch.tensor([source]), present[present != source]])


def _subset_sizes(count: int, sizes) -> list[int]:
    """The requested numbers of images up to ``count``, and ``count`` itself (all the class's images)."""
    return sorted({int(n) for n in sizes if 1 <= n <= count} | {count})


@dataclass
class ConsistencyStudy:
    """Fig. 2 for every class. ``sweep``: the IoU table of each class's prototype over its images (columns
    ``class``, ``image``, ``order`` (0 = the source), ``threshold``, ``iou``); ``curve``: per class and number of
    images n (the source and the next n - 1 images), the best shared threshold and its mean IoU, the mean IoU at
    the threshold best for the source alone, and the mean of each image's own best IoU; ``sources``: class -> image."""

    sweep: "object"
    curve: "object"
    sources: dict
    rule: str
    sizes: list

    def summary(self) -> dict:
        """Means over classes: at n = 1 (the source image), and over all of each class's images with the best
        shared threshold, with the source's threshold, and with each image's own best threshold (an oracle)."""
        last = self.curve.loc[self.curve.groupby("class")["n_images"].idxmax()]
        first = self.curve[self.curve["n_images"] == 1]
        return {"source_image_iou": float(first["iou"].mean()),
                "all_images_iou": float(last["iou"].mean()),
                "all_images_iou_source_threshold": float(last["iou_source_threshold"].mean()),
                "all_images_per_image_best_iou": float(last["per_image_best_iou"].mean()),
                "n_classes": int(len(last)), "mean_images_per_class": float(last["n_images"].mean())}

    def mean_curve(self):
        """Mean over classes of the IoU at each of the requested numbers of images (each mean over the classes with
        that many images)."""
        rows = self.curve[self.curve["n_images"].isin(self.sizes)]
        return rows.groupby("n_images")[["iou", "iou_source_threshold", "per_image_best_iou"]].mean()


def consistency_for_class(features, class_id: int, targets: torch.Tensor, *, rule: str = "mass",
                          fraction: float = 0.6, method: str = "dino", thresholds=None, ignore_index: int = 255):
    """Sweep of one class: the prototype of ``targets[0]``'s attention-masked patches against that class's ground
    truth in every image of ``targets``. Similarities are clamped at 0 for the ``"mass"`` rule (AlignSeg thresholds
    the similarity map "similar to how we process the attention map"). Returns the sweep table, the prototype (D,)
    and the similarity maps (len(targets), h, w)."""
    prototype = attention_prototypes(features, targets[:1], fraction=fraction, method=method)
    sim = similarity_maps(features.patches[targets], prototype)[:, 0]
    if rule == "mass":
        sim = sim.clamp_min(0)
    labels = features.labels[targets]
    table = threshold_sweep(sim, labels == class_id, labels != ignore_index, thresholds, rule=rule,
                            map_names=[class_id], image_ids=list(range(len(targets))))
    table = table.rename(columns={"map": "class", "image": "order"})
    table.insert(1, "image", targets.numpy()[table["order"].to_numpy()])
    return table, prototype[0], sim


def consistency_view(features, source: int, class_id: int, threshold: float, n_classes: int, *,
                     rule: str = "mass", fraction: float = 0.6, method: str = "dino", min_share: float = 0.01,
                     n_show: int = 8, ignore_index: int = 255) -> dict:
    """Fig. 2 for one choice: the prototype of image ``source`` (its attention-masked patches) against class
    ``class_id`` in the images that hold it (``targets``, the source first): each image's IoU at ``threshold`` and
    their mean, the best shared threshold of the 5%-step sweep, and the first ``n_show`` masks (H, W) to draw."""
    shares = class_pixel_shares(features.labels, n_classes, ignore_index)
    targets = class_images(shares, class_id, min_share, source=source)
    table, prototype, sim = consistency_for_class(features, class_id, targets, rule=rule, fraction=fraction,
                                                  method=method, ignore_index=ignore_index)
    labels = features.labels[targets]
    at = threshold_sweep(sim, labels == class_id, labels != ignore_index, [threshold], rule=rule)["iou"].to_numpy()
    curve = table.groupby("threshold")["iou"].mean()
    masks = upsample_mask(threshold_masks(sim[:n_show], threshold, rule), features.image_size)
    return {"source": source, "class": class_id, "threshold": threshold, "targets": targets, "prototype": prototype,
            "iou_per_image": at, "iou": float(at.mean()), "best_threshold": float(curve.idxmax()),
            "best_iou": float(curve.max()), "shown": targets[:n_show], "masks": masks}


def semantic_consistency(features, n_classes: int, classes=None, *, rule: str = "mass", fraction: float = 0.6,
                         method: str = "dino", min_share: float = 0.01, n_images=None, thresholds=None,
                         ignore_index: int = 255) -> ConsistencyStudy:
    """AlignSeg Fig. 2 for each class in ``classes``: the prototype of the image where the class covers most
    segments the class in the other images that contain it (at least ``min_share`` of their pixels).

    Args:
        features: a :class:`nbseg.probes.FeatureSet` with labels.  classes: class ids (default 1..C-1: all but a
            VOC-style background 0; see :func:`thing_classes`).
        rule: ``"mass"`` (keep a fraction of each similarity map's mass) or ``"value"`` (cosine >= threshold).
        n_images: numbers of images to score (default 1, 2, 4, ... and all).
    """
    shares = class_pixel_shares(features.labels, n_classes, ignore_index)
    classes = list(range(1, n_classes)) if classes is None else list(classes)     # VOC-style: 0 = background
    sweeps, curves, sources = [], [], {}
    counts = [int((shares[:, c] >= min_share).sum()) for c in classes]
    n_images = [2 ** i for i in range(max(counts + [1]).bit_length())] if n_images is None else list(n_images)
    for c in classes:
        targets = class_images(shares, c, min_share)
        if len(targets) == 0:
            continue
        table, _, _ = consistency_for_class(features, c, targets, rule=rule, fraction=fraction, method=method,
                                            thresholds=thresholds, ignore_index=ignore_index)
        sources[c] = int(targets[0])
        source_curve = table[table["order"] == 0].set_index("threshold")["iou"]
        source_threshold = source_curve.idxmax()
        for n in _subset_sizes(len(targets), n_images):
            sub = table[table["order"] < n]
            curve = sub.groupby("threshold")["iou"].mean()
            curves.append({"class": c, "n_images": n, "threshold": float(curve.idxmax()), "iou": float(curve.max()),
                           "source_threshold": float(source_threshold),
                           "iou_source_threshold": float(curve[source_threshold]),
                           "per_image_best_iou": float(sub.groupby("order")["iou"].max().mean())})
        sweeps.append(table)
    if not sweeps:
        raise ValueError(f"no image holds any of the classes {classes} on at least {min_share:.0%} of its pixels")
    return ConsistencyStudy(sweep=pd.concat(sweeps, ignore_index=True), curve=pd.DataFrame(curves),
                            sources=sources, rule=rule, sizes=n_images)


# ----------------------------------------------------------------------------------------------------------------
# §III-B, Fig. 3: semantic quality across the image


@dataclass(frozen=True)
class QualityCase:
    """One Fig. 3 experiment: segment image ``target`` into background / ``classes[0]`` / ``classes[1]`` with the
    attention prototypes of images ``sources`` and the reversed-mask prototype of ``background_source``."""

    target: int
    classes: tuple[int, int]
    sources: tuple[int, int]
    background_source: int


def quality_cases(labels: torch.Tensor, n_classes: int, *, background: int = 0, min_share: float = 0.02,
                  ignore_index: int = 255, limit: int | None = None) -> list[QualityCase]:
    """Every image with at least two non-background classes covering ``min_share`` of it: its two largest classes;
    as sources, the other image where each class covers the largest share (AlignSeg's "representative images");
    the background prototype comes from the first source's reversed attention mask (AlignSeg's "person image")."""
    shares = class_pixel_shares(labels, n_classes, ignore_index)
    ranked = shares.argsort(dim=0, descending=True)                      # (N, C): images by share, per class
    cases = []
    for target in range(labels.shape[0]):
        s = shares[target].clone()
        s[background] = 0
        a, b = s.argsort(descending=True)[:2].tolist()
        if s[b] < min_share:
            continue
        src = tuple(int(next(i for i in ranked[:, c].tolist() if i != target)) for c in (a, b))
        if min(shares[src[0], a], shares[src[1], b]) < min_share:       # a class no other image shows
            continue
        cases.append(QualityCase(target, (a, b), src, src[0]))
        if limit is not None and len(cases) >= limit:
            break
    return cases


def quality_prototypes(features, cases: list[QualityCase], *, fraction: float = 0.6,
                       method: str = "dino") -> torch.Tensor:
    """(len(cases), 3, D): per case the background prototype (reversed mask), then the two class prototypes."""
    background = attention_prototypes(features, [c.background_source for c in cases], fraction=fraction,
                                      method=method, reverse=True)
    first = attention_prototypes(features, [c.sources[0] for c in cases], fraction=fraction, method=method)
    second = attention_prototypes(features, [c.sources[1] for c in cases], fraction=fraction, method=method)
    return torch.stack([background, first, second], dim=1)


def crop_boxes(size: tuple[int, int], tiles: int = 2) -> list[tuple[int, int, int, int]]:
    """A ``tiles`` x ``tiles`` grid of non-overlapping boxes (top, left, height, width) covering an (H, W) image."""
    H, W = size
    rows = np.linspace(0, H, tiles + 1).round().astype(int)
    cols = np.linspace(0, W, tiles + 1).round().astype(int)
    return [(int(rows[i]), int(cols[j]), int(rows[i + 1] - rows[i]), int(cols[j + 1] - cols[j]))
            for i in range(tiles) for j in range(tiles)]


def local_view_patches(backbone, images: torch.Tensor, box: tuple[int, int, int, int], *,
                       batch_size: int = 32) -> torch.Tensor:
    """Patch tokens of the crop ``box`` (top, left, height, width) of every image, resized (bilinear) back to the
    full input size: (N, 3, H, W) -> (N, h, w, D). A local crop seen at full resolution, as AlignSeg re-segments it."""
    top, left, height, width = box
    crops = images[:, :, top:top + height, left:left + width]
    crops = F.interpolate(crops, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return torch.cat([backbone.extract(crops[i:i + batch_size].clamp(0, 1)).patches.cpu()
                      for i in range(0, len(crops), batch_size)])


def local_view_segmentation(backbone, images: torch.Tensor, prototypes: torch.Tensor, boxes, *,
                            batch_size: int = 32) -> torch.Tensor:
    """Re-segment every crop in ``boxes`` at full input size by argmax over the image's prototypes and paste the
    result back: images (N, 3, H, W), prototypes (P, D) or (N, P, D) -> (N, H, W) prototype ids (pixels outside
    every box keep -1)."""
    out = torch.full((images.shape[0], *images.shape[-2:]), -1, dtype=torch.long)
    for top, left, height, width in boxes:
        patches = local_view_patches(backbone, images, (top, left, height, width), batch_size=batch_size)
        seg = prototype_segmentation(patches, prototypes)
        out[:, top:top + height, left:left + width] = upsample_labels(seg, (height, width))
    return out


def region_scores(pred: torch.Tensor, gt: torch.Tensor, regions: dict, n_classes: int, class_names=None,
                  ignore_index: int = 255) -> list[dict]:
    """mIoU (identity matching, classes present in the region) and pixel accuracy of class-id predictions inside
    each named region (``{"salient": (N, H, W) bool, ...}``): one dataset-level confusion matrix per region."""
    rows = []
    for name, region in regions.items():
        scored = torch.where(region, gt, torch.full_like(gt, ignore_index))
        conf = confusion_matrix(pred, scored, n_classes, n_classes, ignore_index)
        r = scores_from_confusion(conf, np.arange(n_classes), class_names, protocol="identity",
                                  n_images=len(gt), ignore_index=ignore_index)
        rows.append({"region": name, "miou": r.miou, "pixel_acc": r.pixel_acc, "pixels": int(conf.sum())})
    return rows


def case_ground_truth(labels: torch.Tensor, cases: list[QualityCase], background: int = 0,
                      ignore_index: int = 255) -> torch.Tensor:
    """The targets' labels with every class but background and the case's two classes ignored: (n, H, W)."""
    gt = labels[[c.target for c in cases]].clone()
    for i, case in enumerate(cases):
        keep = (gt[i] == background) | (gt[i] == case.classes[0]) | (gt[i] == case.classes[1])
        gt[i][~keep] = ignore_index
    return gt


def case_class_ids(cases: list[QualityCase], background: int = 0) -> torch.Tensor:
    """(n, 3): the class each prototype id stands for in each case (background, first, second class)."""
    return torch.tensor([[background, *c.classes] for c in cases])


@dataclass
class QualityStudy:
    """Fig. 3 over many images. ``table``: mIoU and pixel accuracy per view (global, local) and region (all, salient,
    non-salient); ``global_pred`` / ``local_pred`` / ``gt`` (n, H, W) class ids; ``salient`` (n, H, W) bool."""

    table: "object"
    cases: list
    global_pred: torch.Tensor
    local_pred: torch.Tensor
    gt: torch.Tensor
    salient: torch.Tensor

    def summary(self) -> dict:
        """``"<view>/<region>/miou"`` for every row, and the number of images segmented (``n_cases``)."""
        out = {f"{r['view']}/{r['region']}/miou": r["miou"] for _, r in self.table.iterrows()}
        out["n_cases"] = len(self.cases)
        return out


def semantic_quality(backbone, features, n_classes: int, class_names=None, *, cases=None, fraction: float = 0.6,
                     method: str = "dino", tiles: int = 2, background: int = 0, min_share: float = 0.02,
                     ignore_index: int = 255, batch_size: int = 32) -> QualityStudy:
    """AlignSeg Fig. 3 over every case (default :func:`quality_cases`): argmax over the background and two class
    prototypes on the global view, and on each of ``tiles`` x ``tiles`` local crops re-segmented at full input size
    by ``backbone``; scored inside and outside the target's saliency mask (its own attention, ``fraction`` mass)."""
    cases = quality_cases(features.labels, n_classes, background=background, min_share=min_share,
                          ignore_index=ignore_index) if cases is None else cases
    if not cases:
        raise ValueError("no image has two non-background classes to segment; lower min_share or use more images")
    targets = torch.tensor([c.target for c in cases])
    prototypes = quality_prototypes(features, cases, fraction=fraction, method=method)
    ids = case_class_ids(cases, background)
    size = features.image_size
    global_seg = upsample_labels(prototype_segmentation(features.patches[targets], prototypes), size)
    local_seg = local_view_segmentation(backbone, features.images[targets], prototypes,
                                        crop_boxes(size, tiles), batch_size=batch_size)
    global_pred = ids.gather(1, global_seg.flatten(1)).view_as(global_seg)       # prototype ids -> class ids
    local_pred = ids.gather(1, local_seg.flatten(1)).view_as(local_seg)
    gt = case_ground_truth(features.labels, cases, background, ignore_index)
    salient = upsample_mask(saliency(features.attn[targets], method, fraction), size)
    regions = {"all": torch.ones_like(salient), "salient": salient, "non-salient": ~salient}
    rows = []
    for view, pred in (("global", global_pred), ("local", local_pred)):
        rows += [{"view": view, **r} for r in region_scores(pred, gt, regions, n_classes, class_names, ignore_index)]
    return QualityStudy(pd.DataFrame(rows), cases, global_pred, local_pred, gt, salient)


def quality_view(backbone, features, case: QualityCase, box: tuple[int, int, int, int], n_classes: int, *,
                 fraction: float = 0.6, method: str = "dino", ignore_index: int = 255) -> dict:
    """One Fig. 3 panel set for an interactive choice: the global segmentation of ``case.target`` (class ids,
    (H, W)), the crop ``box`` re-segmented at full size (class ids, (h_box, w_box)), the ground truth of both, and
    the mIoU of each view inside the crop."""
    prototypes = quality_prototypes(features, [case], fraction=fraction, method=method)
    ids = case_class_ids([case])[0]
    t = case.target
    global_pred = ids[upsample_labels(prototype_segmentation(features.patches[t:t + 1], prototypes),
                                      features.image_size)[0]]
    top, left, height, width = box
    local = local_view_segmentation(backbone, features.images[t:t + 1], prototypes, [box])[0]
    local_pred = ids[local[top:top + height, left:left + width]]
    gt = case_ground_truth(features.labels, [case], ignore_index=ignore_index)[0]
    crop_gt = gt[top:top + height, left:left + width]
    every = {"crop": torch.ones(1, height, width, dtype=torch.bool)}
    score = {view: region_scores(pred[None], crop_gt[None], every, n_classes, ignore_index=ignore_index)[0]["miou"]
             for view, pred in (("global", global_pred[top:top + height, left:left + width]), ("local", local_pred))}
    return {"case": case, "box": box, "global_pred": global_pred, "local_pred": local_pred, "gt": gt,
            "crop_gt": crop_gt, "crop_image": features.images[t, :, top:top + height, left:left + width],
            "miou_global_crop": score["global"], "miou_local_crop": score["local"]}


# ----------------------------------------------------------------------------------------------------------------
# Table IV: prototypes vs classes


def class_mean_embeddings(features, n_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(C, D) mean of the L2-normalised patch embeddings of each class, pixel-weighted (NaN rows for absent
    classes); the class representatives of AlignSeg Table IV."""
    emb, lab, w, _ = pixel_weighted_embeddings(features.patches, features.labels, n_classes,
                                               ignore_index=ignore_index)
    return class_centres(emb, lab, n_classes, w).float()


def prototype_class_similarity(prototypes: torch.Tensor, class_means: torch.Tensor, class_names, *,
                               temperature: float = 1.0, prototype_names=None):
    """AlignSeg Table IV: cosine similarity of each prototype with each class's mean embedding, softmax-normalised
    over the classes (``exp(cos / temperature)``; AlignSeg's temperatures are 1).

    Args:
        prototypes: (P, D).  class_means: (C, D); NaN rows (classes absent from the data) are left out.
    Returns:
        pandas DataFrame (P rows, one column per present class), each row summing to 1.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    present = ~torch.isnan(class_means).any(dim=1)
    cos = F.normalize(prototypes.float(), dim=1) @ F.normalize(class_means[present].float(), dim=1).T
    probs = (cos / temperature).softmax(dim=1)
    names = [n for n, keep in zip(class_names, present.tolist()) if keep]
    index = prototype_names or [f"prototype {i + 1}" for i in range(len(prototypes))]
    return pd.DataFrame(probs.numpy(), index=pd.Index(index, name="prototype"),
                        columns=pd.Index(names, name="class"))


def source_prototype_table(features, n_classes: int, class_names, classes=None, *, fraction: float = 0.6,
                           method: str = "dino", min_share: float = 0.01, temperature: float = 1.0,
                           ignore_index: int = 255):
    """Table IV with hand-picked instead of learnt prototypes: for each class (default :func:`thing_classes`), the
    attention prototype of the image where it covers most, against every class's mean embedding. Rows are named
    after the class whose image gave the prototype (:func:`own_class_top1` reads the diagonal)."""
    shares = class_pixel_shares(features.labels, n_classes, ignore_index)
    classes = thing_classes(list(class_names)) if classes is None else list(classes)
    classes = [c for c in classes if shares[:, c].max() >= min_share]
    sources = [int(class_images(shares, c, min_share)[0]) for c in classes]
    prototypes = attention_prototypes(features, sources, fraction=fraction, method=method)
    return prototype_class_similarity(prototypes, class_mean_embeddings(features, n_classes, ignore_index),
                                      class_names, temperature=temperature,
                                      prototype_names=[class_names[c] for c in classes])


def own_class_top1(table) -> float:
    """Share of rows of a :func:`source_prototype_table` whose largest entry is in the row's own class column."""
    return float((table.idxmax(axis=1) == table.index).mean())
