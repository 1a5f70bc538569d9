"""What frozen ViT features know: extraction over a dataset and the measurements every probe and notebook shares.

* :func:`open_dataset` / :func:`probe_backbones` - what every probe notebook opens: the dataset (resized for real
  images) and the backbone asked for, with the same architecture at random init beside it as a baseline.
* :func:`~nbseg.features.extract_dataset` (in :mod:`nbseg.features`, re-exported) - run a frozen backbone once
  over a dataset: patch tokens, CLS, CLS attention, labels.
* :func:`foreground_masks` - thing-foreground masks from a label map (VOC convention: 0 = background).
* :func:`saliency_iou` - IoU of keep-the-mass attention masks with the ground-truth foreground, per image.
* :func:`patch_class_shares` / :func:`patch_labels` - the share of each class in every patch, and its majority.
* :func:`sample_patch_points` / :func:`embed_2d` - patch embeddings with their classes, projected to 2-D (t-SNE, PCA).
* :func:`~nbseg.cluster.kmeans_segmentation` (re-exported) - per-image or dataset-level k-means on patch tokens.
* :func:`linear_probe` - logistic regression on frozen patch tokens, scored at pixel level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE

from nbseg import backbones
from nbseg.cluster import kmeans_segmentation
from nbseg.data import CenterCrop, Compose, Resize, load_dataset
from nbseg.evaluation import scores_from_confusion
from nbseg.evaluation.baselines import kmeans_baselines
from nbseg.evaluation.metrics import confusion_matrix
from nbseg.features.extract import FeatureSet, extract_dataset
from nbseg.saliency import saliency as saliency_mask
from nbseg.saliency import mask_iou, upsample_mask
from nbseg.world import PROBE_SIZE


def open_dataset(name: str, root: str | None = None, split: str = "val", *, labels: str = "voc",
                 image_size: int | None = None, world_size: int | None = None):
    """The dataset a probe notebook reads: ``name`` at ``root`` (None: the embedded world), images resized (short
    side) and centre-cropped to ``image_size`` when given (real datasets, whose images differ in size).

    World only: ``labels`` picks the label set; ``world_size`` the render (the world drawn at that size, not
    resized). None reads the probes' render (:data:`nbseg.world.PROBE_SIZE`, 192 px) when ``root`` is None and the
    root's own render otherwise. Both are ignored for other datasets."""
    transform = Compose([Resize(image_size), CenterCrop(image_size)]) if image_size else None
    extra = {}
    if name == "world":
        default_render = world_size is None and root is None
        extra = {"labels": labels, "size": PROBE_SIZE if default_render else world_size}
    return load_dataset(name, root=root, split=split, transform=transform, **extra)


def probe_backbones(name: str, weights: str | None = None, *, random_init: bool = False,
                    compare_random_init: bool = True, seed: int = 0) -> dict:
    """The backbones a probe measures, by role: ``{"trained": ..., "random_init": ...}``.

    ``"trained"`` is ``name`` with ``weights`` (the shipped file for ``"embedded"``, the hub or a local file for a
    timm name); with ``compare_random_init`` the same architecture at random init (seeded) is added as the
    baseline every number is compared with. ``random_init=True`` measures the random-init model alone (role
    ``"random_init"``). An unknown name or a wrong file raises :class:`nbseg.errors.WeightsError`.
    """
    if random_init:
        return {"random_init": backbones.load(name, weights, random_init=True, seed=seed)}
    out = {"trained": backbones.load(name, weights)}
    if compare_random_init:
        out["random_init"] = backbones.load(name, random_init=True, seed=seed)
    return out


def foreground_masks(labels: torch.Tensor, ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Thing foreground of VOC-style labels (0 = background). Returns (fg (N, H, W) bool, valid (N, H, W) bool)."""
    valid = labels != ignore_index
    return (labels > 0) & valid, valid


def saliency_iou(attn: torch.Tensor, labels: torch.Tensor, *, fraction: float = 0.6, method: str = "dino",
                 ignore_index: int = 255) -> torch.Tensor:
    """Per-image IoU of the saliency mask (upsampled to the label size) with the ground-truth foreground.

    Args:
        attn: (N, heads, h, w) CLS attention.  labels: (N, H, W) VOC-style labels (0 background, 255 ignored).
    Returns:
        (N,) IoU.
    """
    masks = upsample_mask(saliency_mask(attn, method, fraction), tuple(labels.shape[-2:]))
    fg, valid = foreground_masks(labels, ignore_index)
    return mask_iou(masks, fg, valid)


def patch_class_shares(labels: torch.Tensor, grid: tuple[int, int], n_classes: int, ignore_index: int = 255
                       ) -> torch.Tensor:
    """Share of each class among the pixels of every patch (ignored pixels count for no class).

    Args:
        labels: (N, H, W) pixel labels.  grid: (h, w) patch grid.
    Returns:
        (N, C, h, w) float: for H, W multiples of h, w, the fraction of the patch's pixels of each class.
    """
    N, H, W = labels.shape
    one_hot = torch.zeros(N, n_classes + 1, H, W)
    lab = labels.clone()
    lab[lab == ignore_index] = n_classes
    one_hot.scatter_(1, lab[:, None], 1.0)
    return F.adaptive_avg_pool2d(one_hot, tuple(grid))[:, :n_classes]


def patch_labels(labels: torch.Tensor, grid: tuple[int, int], n_classes: int, ignore_index: int = 255
                 ) -> torch.Tensor:
    """Majority class of each patch: (N, H, W) pixel labels -> (N, h, w); all-ignore patches get ``ignore_index``."""
    shares = patch_class_shares(labels, grid, n_classes, ignore_index)
    out = shares.argmax(1)
    out[shares.sum(1) == 0] = ignore_index
    return out


def sample_patch_points(features: FeatureSet, n_classes: int, *, max_points: int | None = 3000, seed: int = 0,
                        ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Patch embeddings with their majority class, a seeded random subset of at most ``max_points``.

    Returns (x (M, D), y (M,) class ids, index (M,) flat index into ``features.patches.reshape(-1, D)``); patches
    whose pixels are all ignored are left out. Points keep their dataset order.
    """
    y = patch_labels(features.labels, features.grid, n_classes, ignore_index).reshape(-1)
    index = torch.nonzero(y != ignore_index).flatten()
    if max_points is not None and len(index) > max_points:
        pick = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:max_points]
        index = index[pick.sort().values]
    return features.patches.reshape(-1, features.patches.shape[-1])[index], y[index], index


def embed_2d(x: torch.Tensor, method: str = "tsne", *, seed: int = 0, perplexity: float = 30.0,
             max_iter: int = 1000) -> np.ndarray:
    """2-D map of embeddings (M, D) -> (M, 2), in the cosine geometry every probe uses (rows L2-normalised first).

    ``method``: ``"tsne"`` (scikit-learn's Barnes-Hut t-SNE, PCA init, as AlignSeg Fig. 7) or ``"pca"`` (fast,
    linear: distances along the two main axes are real).
    """
    z = F.normalize(x.float(), dim=1).numpy()
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(z)
    if method == "tsne":
        perplexity = min(perplexity, max(1.0, (len(z) - 1) / 3))     # t-SNE needs perplexity < n_samples
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=max_iter).fit_transform(z)
    raise ValueError(f"unknown 2-D embedding method {method!r}: use 'tsne' or 'pca'")


def embedding_panels(features: FeatureSet, image_sets: dict, n_classes: int, *, max_points: int = 3000,
                     seed: int = 0, ignore_index: int = 255) -> dict:
    """Patch embeddings of several sets of images in one shared 2-D PCA plane (fitted on all of them), so the
    panels can be compared: ``{title: image indices}`` -> ``{title: (points (M, 2), classes (M,))}``, at most
    ``max_points`` points per panel (AlignSeg Fig. 2's embedding plot, for 1, a few and many images)."""
    union = sorted({int(i) for indices in image_sets.values() for i in torch.as_tensor(indices).reshape(-1)})
    x, _, _ = sample_patch_points(features.subset(union), n_classes, max_points=max_points, seed=seed,
                                  ignore_index=ignore_index)
    pca = PCA(n_components=2, random_state=seed).fit(F.normalize(x.float(), dim=1).numpy())
    out = {}
    for title, indices in image_sets.items():
        x, y, _ = sample_patch_points(features.subset(indices), n_classes, max_points=max_points, seed=seed,
                                      ignore_index=ignore_index)
        out[title] = (pca.transform(F.normalize(x.float(), dim=1).numpy()), y)
    return out


@dataclass
class LinearProbeResult:
    pixel_acc: float
    miou: float
    predictions: torch.Tensor         # (N, H, W) predicted classes on the evaluation set


def linear_probe(train: FeatureSet, test: FeatureSet, n_classes: int, *, C: float = 1.0, max_iter: int = 300,
                 max_train_patches: int = 60000, seed: int = 0, ignore_index: int = 255) -> LinearProbeResult:
    """Logistic regression (scikit-learn, multinomial) from frozen patch tokens to the majority class of each
    training patch; test logits are bilinearly upsampled to pixels and scored against the pixel labels.

    Features are standardised with the training mean and std. Returns pixel accuracy and mIoU (identity matching).
    """
    y = patch_labels(train.labels, train.grid, n_classes, ignore_index).reshape(-1)
    x = train.patches.reshape(-1, train.patches.shape[-1])
    keep = y != ignore_index
    x, y = x[keep], y[keep]
    if len(y) > max_train_patches:
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max_train_patches]
        x, y = x[idx], y[idx]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(((x - mean) / std).numpy(), y.numpy())
    xt = ((test.patches - mean) / std).reshape(-1, x.shape[-1]).numpy()
    logits = torch.from_numpy(clf.decision_function(xt)).float()
    full = torch.full((logits.shape[0], n_classes), -1e4)
    full[:, torch.from_numpy(clf.classes_).long()] = logits                  # classes absent from training
    N, h, w = test.patches.shape[:3]
    logits = full.reshape(N, h, w, n_classes).permute(0, 3, 1, 2)
    pred = F.interpolate(logits, size=test.image_size, mode="bilinear", align_corners=False).argmax(1)
    conf = confusion_matrix(pred, test.labels, n_classes, n_classes, ignore_index=ignore_index)
    res = scores_from_confusion(conf, np.arange(n_classes), protocol="linear probe (identity)", n_images=N)
    return LinearProbeResult(pixel_acc=res.pixel_acc, miou=res.miou, predictions=pred)


@dataclass
class KMeansBenchmark:
    """Per-image and dataset-level k-means segmentations of a FeatureSet and their scores under both protocols."""

    table: "object"                   # pandas DataFrame: one row per (method, protocol)
    per_image: torch.Tensor           # (N, H, W) cluster ids, each image clustered alone
    dataset: torch.Tensor             # (N, H, W) cluster ids shared over the split
    k_per_image: int
    k_dataset: int
    saliency_iou: float

    def flat(self) -> dict:
        """``{"<method>/<protocol>/miou": ...}`` for metrics.json (first backbone of the table only)."""
        first = self.table[self.table["backbone"] == self.table["backbone"].iloc[0]]
        out = {"saliency_iou": self.saliency_iou}
        for _, r in first.iterrows():
            out[f"{r['method']}/{r['protocol']}/miou"] = r["miou"]
            out[f"{r['method']}/{r['protocol']}/pixel_acc"] = r["pixel_acc"]
        return out


def kmeans_benchmark(features: FeatureSet, dataset, *, k_per_image: int = 5, k_dataset: int | None = None,
                     seed: int = 0, saliency_fraction: float = 0.6) -> KMeansBenchmark:
    """Segment ``features`` by per-image and dataset-level k-means (:func:`nbseg.evaluation.kmeans_baselines`,
    default ``k_dataset``: the number of classes) and score each with dataset-level Hungarian matching and
    AlignSeg's per-image many-to-one precision protocol (mIoU over present classes, at the label resolution)."""
    k_dataset = k_dataset or dataset.num_classes
    base = kmeans_baselines(features, dataset, k_per_image, k_dataset, seed=seed, per_image_size=None)
    table = pd.DataFrame([{"backbone": features.backbone, "dataset": features.dataset, "method": r["method"],
                           "K": r["K"], "protocol": r["protocol"], "mean_over": r["mean_over"], "miou": r["miou"],
                           "pixel_acc": r["pixel_acc"]} for r in base.rows])
    # Saliency is scored against the thing foreground, which only VOC-style label sets (0 = background) define.
    has_background = features.labels is not None and dataset.class_names[0] == "background"
    sal = saliency_iou(features.attn, features.labels, fraction=saliency_fraction).mean().item() \
        if has_background else float("nan")
    return KMeansBenchmark(table=table, per_image=base.per_image, dataset=base.dataset, k_per_image=k_per_image,
                           k_dataset=k_dataset, saliency_iou=sal)
