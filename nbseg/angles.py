"""Intra- and inter-class angles of embeddings (DCN §1, after its ref. [8]), within each image and over a dataset.

DCN's argument for clustering each image on its own: within one image the embeddings of a class sit close to their
class centre (small *intra-class angle*) and the class centres lie far apart (large *inter-class angle*); over the
whole dataset the centres crowd together. DCN reports, for DINO ViT-S/8 on PASCAL VOC 2012 (21 classes),
44.76° / 51.55° per image against 49.28° / 24.91° over the dataset (:data:`DCN_REPORTED`).

Definitions used here (cosine geometry, as DCN's Eqs. (5)-(6)): embeddings are L2-normalised; a class centre is the
(weighted) mean of its normalised embeddings; the angle between two vectors is ``arccos(cos)`` in degrees.

* intra-class angle: the mean, over every embedding, of the angle between it and its class centre;
* inter-class angle: for each class, the smallest angle between its centre and another class's centre, averaged
  over the classes (undefined, NaN, with fewer than two classes).

"Pixels" are patch embeddings nearest-upsampled to the label map: :func:`pixel_weighted_embeddings` turns every
(patch, class) pair into one row weighted by the class's share of the patch's pixels, which gives the same numbers
as repeating each patch once per pixel, without the memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from nbseg.probes.basics import patch_class_shares
from nbseg.progress import tqdm

# DCN §1: "We count them using pixels in a single image and get the averages of 44.76° and 51.55° ... the
# intra-class angle and inter-class angle of all pixels in the whole dataset is 49.28° and 24.91°".
DCN_REPORTED = {
    "source": "DCN paper (reported): DINO ViT-S/8 on PASCAL VOC 2012, 21 classes",
    "per image": {"intra_deg": 44.76, "inter_deg": 51.55},
    "dataset": {"intra_deg": 49.28, "inter_deg": 24.91},
}


def angle_deg(cos: torch.Tensor) -> torch.Tensor:
    """Angles in degrees from cosines (clamped to [-1, 1]; computed in float64, where arccos near 1 is stable)."""
    return torch.rad2deg(torch.arccos(cos.double().clamp(-1.0, 1.0)))


def class_centres(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """Class centres: the weighted mean of the L2-normalised embeddings of each class.

    Args:
        embeddings: (N, D).  labels: (N,) ids in 0..n_classes-1 (other values are ignored).  weights: (N,) >= 0.
    Returns:
        (n_classes, D) float64; rows of classes without any (weighted) embedding are NaN.
    """
    x = F.normalize(embeddings.double(), dim=1)
    w = torch.ones(len(x), dtype=torch.float64) if weights is None else weights.double()
    keep = (labels >= 0) & (labels < n_classes) & (w > 0)
    sums = torch.zeros(n_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels[keep], x[keep] * w[keep, None])
    mass = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, labels[keep], w[keep])
    return torch.where(mass[:, None] > 0, sums / mass.clamp_min(1e-300)[:, None], torch.full_like(sums, math.nan))


@dataclass
class ClassAngles:
    """Angles of one set of embeddings. ``classes`` (C',) are the classes present; ``intra_per_class`` (C',) the mean
    angle of each class's embeddings to its centre; ``inter_per_class`` (C',) each centre's smallest angle to another
    centre (NaN when C' < 2); ``to_centre`` (N',) every kept embedding's angle to its class centre; ``weights``
    (N',) their weights."""

    intra_deg: float
    inter_deg: float
    classes: torch.Tensor
    intra_per_class: torch.Tensor
    inter_per_class: torch.Tensor
    to_centre: torch.Tensor
    weights: torch.Tensor


def class_angles(embeddings: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, *,
                 ignore_index: int = 255) -> ClassAngles:
    """Intra- and inter-class angle in degrees (DCN §1; definitions in the module docstring).

    Args:
        embeddings: (N, D) any float dtype.  labels: (N,) integer class ids; ``ignore_index`` and negative ids are
            left out.  weights: (N,) non-negative weights (e.g. pixel shares, :func:`pixel_weighted_embeddings`).
    Returns:
        :class:`ClassAngles`; ``intra_deg`` is NaN without any labelled embedding, ``inter_deg`` with fewer than two
        classes.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"class_angles expects embeddings (N, D) and labels (N,), got {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}")
    w = torch.ones(len(labels), dtype=torch.float64) if weights is None else weights.double()
    keep = (labels != ignore_index) & (labels >= 0) & (w > 0)
    x, w = F.normalize(embeddings[keep].double(), dim=1), w[keep]
    classes, dense = torch.unique(labels[keep].long(), return_inverse=True)
    centres = F.normalize(class_centres(x, dense, len(classes), w), dim=1)
    to_centre = angle_deg((x * centres[dense]).sum(1))
    mass = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, dense, w)
    intra_per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, dense, to_centre * w) / mass
    if len(classes) >= 2:
        between = angle_deg(centres @ centres.T)
        between.fill_diagonal_(math.inf)
        inter_per_class = between.min(dim=1).values
        inter = float(inter_per_class.mean())
    else:
        inter_per_class = torch.full((len(classes),), math.nan, dtype=torch.float64)
        inter = math.nan
    intra = float((to_centre * w).sum() / w.sum()) if len(x) else math.nan
    return ClassAngles(intra, inter, classes, intra_per_class, inter_per_class, to_centre, w)


def pixel_weighted_embeddings(patches: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                              ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patch embeddings as weighted pixels: one row per (patch, class) pair present in the patch.

    Args:
        patches: (N, h, w, D).  labels: (N, H, W) pixel labels.
    Returns:
        embeddings (M, D), labels (M,), weights (M,) (the class's share of the patch's pixels), image (M,) index.
    """
    N, h, w, D = patches.shape
    shares = patch_class_shares(labels, (h, w), n_classes, ignore_index).permute(0, 2, 3, 1)   # (N, h, w, C)
    image, row, col, cls = torch.nonzero(shares > 0, as_tuple=True)
    return patches[image, row, col], cls, shares[image, row, col, cls], image


@dataclass
class AngleStudy:
    """Angles within each image and over the whole set. ``per_image`` is a DataFrame (image, n_classes, intra_deg,
    inter_deg); ``within_images`` concatenates every image's angles to its own class centres; ``dataset`` is the
    whole-set :class:`ClassAngles`; ``inter_within_images`` holds each image's per-class inter angles."""

    per_image: "object"
    dataset: ClassAngles
    within_images: torch.Tensor
    within_weights: torch.Tensor
    inter_within_images: torch.Tensor

    def summary(self) -> dict:
        """``per_image_intra_deg`` (mean over images with a labelled pixel), ``per_image_inter_deg`` (mean over
        images with at least two classes), ``dataset_intra_deg``, ``dataset_inter_deg``, and the image counts."""
        with_two = self.per_image["inter_deg"].notna()
        return {"per_image_intra_deg": float(self.per_image["intra_deg"].mean()),
                "per_image_inter_deg": float(self.per_image.loc[with_two, "inter_deg"].mean()),
                "dataset_intra_deg": self.dataset.intra_deg, "dataset_inter_deg": self.dataset.inter_deg,
                "n_images": int(self.per_image["intra_deg"].notna().sum()), "n_images_inter": int(with_two.sum())}


def angle_study(patches: torch.Tensor, labels: torch.Tensor, n_classes: int, *, ignore_index: int = 255,
                min_share: float = 0.0, progress: bool = False) -> AngleStudy:
    """DCN §1's two scopes: angles within each image (then averaged over images) and over all pixels of the set.

    Args:
        patches: (N, h, w, D) patch embeddings.  labels: (N, H, W) pixel labels (255 = ignore).
        min_share: keep only (patch, class) rows whose class covers at least this share of the patch (0: every
            pixel, DCN's definition; e.g. 0.95: "pure" patches). A patch straddling two classes gives *one*
            embedding to both of their centres, which pulls one image's centres together; when objects are few
            patches across, such rows are a large part of the set, and this separates that effect from the features.
    """
    emb, lab, w, image = pixel_weighted_embeddings(patches, labels, n_classes, ignore_index=ignore_index)
    if min_share > 0:
        keep = w >= min_share
        emb, lab, w, image = emb[keep], lab[keep], w[keep], image[keep]
    rows, within, within_w, inter = [], [], [], []
    for i in tqdm(range(patches.shape[0]), desc="angles per image", disable=not progress):
        sel = image == i
        a = class_angles(emb[sel], lab[sel], w[sel], ignore_index=ignore_index)
        rows.append({"image": i, "n_classes": len(a.classes), "intra_deg": a.intra_deg, "inter_deg": a.inter_deg})
        within.append(a.to_centre)
        within_w.append(a.weights)
        inter.append(a.inter_per_class[~torch.isnan(a.inter_per_class)])
    return AngleStudy(per_image=pd.DataFrame(rows), dataset=class_angles(emb, lab, w, ignore_index=ignore_index),
                      within_images=torch.cat(within), within_weights=torch.cat(within_w),
                      inter_within_images=torch.cat(inter))


def angle_table(studies: dict, *, with_paper: bool = True):
    """DCN's table: one row per (source, scope) with the intra- and inter-class angle, for every study given
    (``{"<backbone> on <dataset>": AngleStudy}``), then DCN's reported numbers, labelled as the paper's."""
    rows = []
    for source, study in studies.items():
        s = study.summary()
        rows.append({"source": source, "scope": "per image", "intra_deg": s["per_image_intra_deg"],
                     "inter_deg": s["per_image_inter_deg"]})
        rows.append({"source": source, "scope": "dataset", "intra_deg": s["dataset_intra_deg"],
                     "inter_deg": s["dataset_inter_deg"]})
    if with_paper:
        for scope in ("per image", "dataset"):
            rows.append({"source": DCN_REPORTED["source"], "scope": scope, **DCN_REPORTED[scope]})
    return pd.DataFrame(rows)

