"""K-means in pure torch, for clustering ViT patch features per image or over a whole dataset.

Why not scikit-learn or faiss: the features usually already sit on the GPU, and notebooks and methods need the
same seeded, device-agnostic behaviour on CPU and CUDA. Everything here:

* runs on the device of its input and never touches the global RNG (a local ``torch.Generator`` seeded by ``seed``);
* computes distances in chunks of ``chunk_size`` rows, so N x k never has to fit in memory (N up to a few million);
* accumulates centroid sums with a one-hot matmul instead of ``index_add_``, which keeps CUDA runs deterministic.

Metrics: ``"euclidean"`` is Lloyd's k-means on the raw vectors (TransFGU clusters raw CLS tokens this way);
``"cosine"`` is spherical k-means: vectors and centroids are L2-normalised and a point joins the centroid with the
largest cosine similarity. Its inertia is the sum of cosine distances ``1 - cos``.

Degenerate input: ``k`` larger than the number of points, or than the number of *distinct* points (distinct after
L2 normalisation for the cosine metric), raises ``ValueError``; k-means++ detects it when every point already
coincides with a chosen centre. A cluster that empties during the iterations is re-seeded at the point farthest
from its current centroid.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

METRICS = ("cosine", "euclidean")
DEFAULT_CHUNK_SIZE = 65536


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown k-means metric {metric!r}; use one of {METRICS}")


def _prepare(x: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, D) features -> float32 (N, D), L2-normalised for the cosine metric (fp16 caches are upcast)."""
    x = x.float()
    return F.normalize(x, dim=1) if metric == "cosine" else x


def _nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, metric: str,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest centroid of every row, chunk by chunk.

    x: (N, D) prepared features; centroids: (k, D) (unit norm for cosine).
    Returns labels (N,) long and the distance to the chosen centroid (N,) float: squared Euclidean distance, or
    cosine distance ``1 - cos``.
    """
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    centroid_sq_norm = (centroids * centroids).sum(1)  # (k,)
    for start in range(0, x.shape[0], chunk_size):
        rows = x[start:start + chunk_size]
        dots = rows @ centroids.T  # (chunk, k)
        if metric == "cosine":
            best, idx = dots.max(1)
            dist[start:start + chunk_size] = (1.0 - best).clamp_min_(0.0)
        else:
            # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c ; |x|^2 does not change the argmin, so add it afterwards.
            partial, idx = (centroid_sq_norm[None, :] - 2.0 * dots).min(1)
            dist[start:start + chunk_size] = (partial + (rows * rows).sum(1)).clamp_min_(0.0)
        labels[start:start + chunk_size] = idx
    return labels, dist


def _centroid_sums(x: torch.Tensor, labels: torch.Tensor, k: int,
                   chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums (k, D) and counts (k,) of x (N, D) under labels (N,).

    A one-hot matmul per chunk rather than ``index_add_``: float atomics on CUDA would make runs non-deterministic.
    """
    sums = torch.zeros(k, x.shape[1], dtype=torch.float32, device=x.device)
    counts = torch.zeros(k, dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk_labels = labels[start:start + chunk_size]
        one_hot = F.one_hot(chunk_labels, k).to(torch.float32)  # (chunk, k)
        sums += one_hot.T @ x[start:start + chunk_size]
        counts += torch.bincount(chunk_labels, minlength=k)
    return sums, counts


def _sample_proportional(weights: torch.Tensor, generator: torch.Generator) -> int:
    """Index drawn with probability proportional to ``weights`` (N,) >= 0.

    Inverse-CDF sampling in float64: ``torch.multinomial`` is limited to 2**24 categories and a float32 cumulative
    sum over millions of points loses the small weights.
    """
    cdf = torch.cumsum(weights.double(), 0)
    u = torch.rand(1, generator=generator, device=weights.device, dtype=torch.float64) * cdf[-1]
    return int(torch.searchsorted(cdf, u).clamp_max_(weights.shape[0] - 1).item())


def _squared_distance_to(x: torch.Tensor, centre: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(N,) squared distances from x (N, D) to one centre (D,), from explicit differences so duplicates of the
    centre get exactly 0 (the matmul form leaves rounding residue, which would hide "too few distinct points")."""
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        diff = x[start:start + chunk_size] - centre
        out[start:start + chunk_size] = (diff * diff).sum(1)
    return out


def _kmeans_pp_init(x: torch.Tensor, k: int, generator: torch.Generator, chunk_size: int) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): x (N, D) prepared -> centroids (k, D)."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device=x.device).item())
    centroids = [x[first]]
    closest_sq = _squared_distance_to(x, x[first], chunk_size)
    for j in range(1, k):
        if not bool((closest_sq > 0).any()):
            raise ValueError(f"k-means with k={k} on data with only {j} distinct points"
                             " (after L2 normalisation for the cosine metric); lower k")
        idx = _sample_proportional(closest_sq, generator)
        centroids.append(x[idx])
        closest_sq = torch.minimum(closest_sq, _squared_distance_to(x, x[idx], chunk_size))
    return torch.stack(centroids)


def _reseed_empty(x: torch.Tensor, centroids: torch.Tensor, counts: torch.Tensor, dist: torch.Tensor) -> None:
    """Move every empty cluster (in place) onto one of the points farthest from their centroids."""
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel() == 0:
        return
    farthest = torch.topk(dist, min(empty.numel(), dist.numel())).indices
    centroids[empty[:farthest.numel()]] = x[farthest]
    dist[farthest] = 0.0


def _lloyd(x: torch.Tensor, centroids: torch.Tensor, metric: str, n_iter: int, shift_tol: float,
           chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd iterations from initial centroids (k, D). Returns labels (N,), centroids (k, D), inertia."""
    k = centroids.shape[0]
    labels, dist = _nearest_centroid(x, centroids, metric, chunk_size)
    for _ in range(n_iter):
        sums, counts = _centroid_sums(x, labels, k, chunk_size)
        new_centroids = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
        new_centroids = torch.where((counts > 0)[:, None], new_centroids, centroids)
        _reseed_empty(x, new_centroids, counts, dist)
        if metric == "cosine":
            new_centroids = F.normalize(new_centroids, dim=1)
        shift = float(((new_centroids - centroids) ** 2).sum().item())
        centroids = new_centroids
        new_labels, dist = _nearest_centroid(x, centroids, metric, chunk_size)
        unchanged = bool(torch.equal(new_labels, labels))
        labels = new_labels
        if unchanged or shift <= shift_tol:
            break
    return labels, centroids, float(dist.double().sum().item())


def kmeans(x: torch.Tensor, k: int, *, n_iter: int = 50, n_init: int = 3, metric: str = "cosine", seed: int = 0,
           tol: float = 1e-4, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor, float]:
    """K-means with k-means++ seeding, best of ``n_init`` restarts (lowest inertia).

    x: (N, D) features on any device (any float dtype; computed in float32).
    Returns labels (N,) long, centroids (k, D) float32 (unit norm for cosine), inertia (float: sum of squared
    distances, or of cosine distances ``1 - cos`` for the cosine metric).
    Stops a restart after ``n_iter`` iterations, when no label changes, or when the total squared centroid shift
    falls below ``tol`` times the mean per-feature variance of the (prepared) data, as scikit-learn does.
    The restarts draw from one local generator seeded with ``seed``: the same call gives the same result and the
    global RNG state is left alone.
    """
    _check_metric(metric)
    if x.ndim != 2:
        raise ValueError(f"kmeans expects features of shape (N, D), got {tuple(x.shape)}")
    if k < 1 or n_init < 1 or n_iter < 0:
        raise ValueError(f"kmeans needs k >= 1, n_init >= 1, n_iter >= 0 (got k={k}, n_init={n_init}, "
                         f"n_iter={n_iter})")
    if k > x.shape[0]:
        raise ValueError(f"k-means with k={k} on only {x.shape[0]} points; lower k")
    data = _prepare(x, metric)
    shift_tol = tol * float(data.var(0, unbiased=False).mean().item()) if data.shape[0] > 1 else 0.0
    generator = torch.Generator(device=data.device)
    generator.manual_seed(seed)
    best = None
    for _ in range(n_init):
        init = _kmeans_pp_init(data, k, generator, chunk_size)
        result = _lloyd(data, init, metric, n_iter, shift_tol, chunk_size)
        if best is None or result[2] < best[2]:
            best = result
    return best


def assign(x: torch.Tensor, centroids: torch.Tensor, metric: str = "cosine",
           chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Label new features with fitted centroids: x (..., D), centroids (k, D) -> labels (...) long."""
    _check_metric(metric)
    if x.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"features have dimension {x.shape[-1]} but centroids {centroids.shape[-1]}")
    flat = _prepare(x.reshape(-1, x.shape[-1]), metric)
    fitted = _prepare(centroids.to(flat.device), metric)
    labels, _ = _nearest_centroid(flat, fitted, metric, chunk_size)
    return labels.reshape(x.shape[:-1])


def kmeans_per_image(features: torch.Tensor, k: int, **kmeans_kwargs) -> torch.Tensor:
    """Cluster each image's patch features on their own: features (B, h, w, D) -> labels (B, h, w) long.

    Every image uses the same ``seed``, so an image's labels do not depend on the batch it came in.
    Cluster ids are arbitrary per image (id 3 in one image has nothing to do with id 3 in the next).
    """
    if features.ndim != 4:
        raise ValueError(f"kmeans_per_image expects features (B, h, w, D), got {tuple(features.shape)}")
    b, h, w, d = features.shape
    labels = [kmeans(features[i].reshape(h * w, d), k, **kmeans_kwargs)[0].reshape(h, w) for i in range(b)]
    return torch.stack(labels) if labels else torch.empty(0, h, w, dtype=torch.long, device=features.device)


def kmeans_dataset(features: torch.Tensor | Sequence[torch.Tensor], k: int,
                   **kmeans_kwargs) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """One k-means over all features of a dataset, so cluster ids are shared across images.

    features: a tensor (..., D), e.g. (N, D) or (B, h, w, D), or a list of per-image tensors (h_i, w_i, D).
    Returns (labels, centroids (k, D)); labels have the features' shape without D, or are a list of (h_i, w_i)
    tensors for list input.
    """
    if isinstance(features, torch.Tensor):
        labels, centroids, _ = kmeans(features.reshape(-1, features.shape[-1]), k, **kmeans_kwargs)
        return labels.reshape(features.shape[:-1]), centroids
    features = list(features)
    if not features:
        raise ValueError("kmeans_dataset got an empty list of feature maps")
    flat = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    labels, centroids, _ = kmeans(flat, k, **kmeans_kwargs)
    sizes = [f.shape[:-1].numel() for f in features]
    return [part.reshape(f.shape[:-1]) for part, f in zip(labels.split(sizes), features)], centroids


def upsample_labels(labels: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of label maps (up or down): (B, h, w) or (h, w) -> (B, H, W) or (H, W).

    ``size`` is an int (square) or (H, W). Uses torch's ``"nearest"`` mode (source index floor(i * h / H)), the rule
    the released AlignSeg evaluation applies to both predictions and ground truth. The dtype is kept.
    """
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    if labels.ndim not in (2, 3):
        raise ValueError(f"upsample_labels expects (B, h, w) or (h, w) label maps, got {tuple(labels.shape)}")
    if tuple(labels.shape[-2:]) == out_hw:
        return labels
    batched = labels if labels.ndim == 3 else labels[None]
    # Interpolate as float64 so every integer id (including 255 and -1) survives exactly.
    resized = F.interpolate(batched[:, None].double(), size=out_hw, mode="nearest")[:, 0].to(labels.dtype)
    return resized if labels.ndim == 3 else resized[0]


def kmeans_segmentation(patches: torch.Tensor, k: int, *, scope: str = "dataset", size: tuple[int, int] | None = None,
                        seed: int = 0, n_init: int = 3, metric: str = "cosine") -> torch.Tensor:
    """Segment by k-means on patch tokens.

    Args:
        patches: (N, h, w, D).
        scope: ``"dataset"`` (one clustering over every patch of every image: clusters can mean classes) or
            ``"image"`` (each image clustered alone: cluster ids mean nothing across images).
        size: upsample the (N, h, w) cluster map to (N, *size) with nearest.
    Returns:
        (N, h, w) or (N, H, W) int64 cluster ids.
    """
    if scope == "dataset":
        labels, _ = kmeans_dataset(patches, k, seed=seed, n_init=n_init, metric=metric)
        labels = labels.reshape(patches.shape[:3])
    elif scope == "image":
        labels = kmeans_per_image(patches, k, seed=seed, n_init=n_init, metric=metric)
    else:
        raise ValueError(f"scope must be 'dataset' or 'image', got {scope!r}")
    return upsample_labels(labels, size) if size is not None else labels
