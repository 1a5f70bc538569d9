"""TransFGU's top-down stages before training, each stored on disk (fp16, keyed like the feature cache, resumable):

1. **Crop bank** (Sec. 3.2, 4.2): square sliding windows of side ``s * min(H, W)`` (s in ``crop_scales``), stride
   half the side, on the image resized ``bank_upscale`` times (released: 2x); the foreground is the head-mean CLS
   attention above its mean (:func:`nbseg.saliency.mean_threshold_saliency`); every window is resized to
   ``crop_size`` and its CLS token stored with its foreground fraction (:func:`crop_bank`).
2. **Concepts**: k-means (Euclidean, raw CLS, as released) on the foreground crops (> ``fg_threshold`` foreground)
   into ``n_things`` concepts and on the background crops (> ``bg_threshold`` background) into ``n_stuff``; the
   centroids are [things; stuff] (:func:`concepts`). Without a foreground split (n_things = 0) every crop is used.
3. **Pseudo-label bank**: Grad-CAM maps (:mod:`~nbseg.methods.transfgu.gradcam`) of every image for every concept,
   (N, K, h, w) at ``image_size`` (:func:`pseudo_label_bank`). ``pseudo_maps: cosine`` (nbseg's design change, not
   the paper's, issue #16; default ``gradcam``) replaces them by :func:`split_cosine_maps`.

Everything is computed in chunks through :mod:`nbseg.features.chunked`, so a killed stage resumes where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nbseg.cluster import assign, kmeans
from nbseg.data.base import resize_pair
from nbseg.features.cache import cache_key
from nbseg.features.chunked import build_arrays, store_dir
from nbseg.methods.transfgu.gradcam import last_block_inputs, pseudo_label_maps
from nbseg.prototype_scores import prototype_cosine_maps
from nbseg.saliency import mean_threshold_saliency

PSEUDO_MAPS = ("gradcam", "cosine")


# ----------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------

def _starts(length: int, side: int, stride: int) -> list[int]:
    starts = list(range(0, length - side + 1, stride))
    if starts[-1] != length - side:                     # an extra window flush with the far edge, as released
        starts.append(length - side)
    return starts


def sliding_windows(height: int, width: int, scales) -> torch.Tensor:
    """Square windows ``(y0, x0, side)`` (W, 3) int64 of side ``floor(s * min(H, W))`` and stride ``side // 2``
    for every s in ``scales``, fully inside the image (plus windows flush with the right / bottom edges)."""
    boxes = []
    for s in scales:
        side = max(1, int(s * min(height, width)))
        stride = max(1, side // 2)
        boxes += [(y, x, side) for y in _starts(height, side, stride) for x in _starts(width, side, stride)]
    return torch.tensor(boxes, dtype=torch.long)


def window_fractions(masks: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Share of each window covered by each mask: masks (B, H, W) bool/float, windows (W, 3) -> (B, W)."""
    m = F.pad(masks.float(), (1, 0, 1, 0)).cumsum(-1).cumsum(-2)              # integral image (B, H+1, W+1)
    y, x, s = windows.unbind(1)
    total = m[:, y + s, x + s] - m[:, y, x + s] - m[:, y + s, x] + m[:, y, x]
    return total / (s * s).float()


def crop_images(images: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """Every window of every image resized (bilinear) to ``size``: (B, 3, H, W) -> (B * W, 3, size, size)."""
    crops = [F.interpolate(images[:, :, y:y + s, x:x + s], size=(size, size), mode="bilinear",
                           align_corners=False, antialias=True) for y, x, s in windows.tolist()]
    return torch.stack(crops, 1).flatten(0, 1).clamp(0, 1)


def load_images(dataset, start: int, stop: int, size: int) -> torch.Tensor:
    """Images ``[start, stop)`` of ``dataset`` resized (square, bilinear) to ``size``: (B, 3, size, size)."""
    return torch.stack([resize_pair(dataset[i].image, None, (size, size))[0] for i in range(start, stop)])


def load_labels(dataset, n: int, size: int) -> torch.Tensor:
    """The first ``n`` label maps resized (nearest) to ``size``: (n, size, size) int64."""
    return torch.stack([resize_pair(dataset[i].image, dataset[i].label, (size, size))[1] for i in range(n)])


# ----------------------------------------------------------------------------------------------------------
# 1. Crop bank
# ----------------------------------------------------------------------------------------------------------

@dataclass
class CropBank:
    """``cls`` (N, W, D) and ``fg`` (N, W) fp16 memory maps; ``windows`` (W, 3) on the image as cropped, of side
    ``size`` (``image_size * bank_upscale``); ``path`` its folder."""

    cls: np.ndarray
    fg: np.ndarray
    windows: torch.Tensor
    size: int
    path: Path
    key: dict


def bank_images(cfg) -> int | None:
    """Images the crop bank is built from: ``bank_limit``, else ``train_limit`` (None: the whole split)."""
    return cfg.bank_limit if cfg.bank_limit is not None else cfg.train_limit


def crop_bank_key(cfg, backbone, dataset) -> dict:
    """The feature cache's key of the bank images (the label set left out: crops do not depend on it) + settings."""
    return {"stage": "transfgu-crop-bank", **cache_key(backbone, dataset, cfg.image_size, bank_images(cfg)),
            "labels": None,
            "scales": list(cfg.crop_scales), "crop_size": cfg.crop_size, "upscale": cfg.bank_upscale}


def crop_bank(cfg, backbone, dataset, *, progress: bool = True, on_chunk=None) -> CropBank:
    """Build (or open, or finish) the crop bank of the first :func:`bank_images` images of ``dataset``."""
    key = crop_bank_key(cfg, backbone, dataset)
    big = cfg.image_size * cfg.bank_upscale
    windows = sliding_windows(big, big, cfg.crop_scales)
    n = key["n_images"]

    def compute(start, stop):
        images = F.interpolate(load_images(dataset, start, stop, cfg.image_size), size=(big, big),
                               mode="nearest")                    # released: cv2 INTER_NEAREST to 2x
        fg_mask = mean_threshold_saliency(backbone.extract(images).attn)                     # (B, h, w)
        fg_pixels = F.interpolate(fg_mask[:, None].float(), size=(big, big), mode="nearest")[:, 0]
        cls = backbone.extract(crop_images(images, windows, cfg.crop_size)).cls
        return {"cls": cls.reshape(stop - start, len(windows), -1).numpy(),
                "fg": window_fractions(fg_pixels, windows).numpy()}

    path = store_dir(key, f"transfgu_crops_{backbone.name}_{key['dataset']}_{key['split']}", cfg.cache_root)
    arrays = build_arrays(path, key, {"cls": (n, len(windows), backbone.dim), "fg": (n, len(windows))}, compute,
                          chunk_size=cfg.chunk_size, progress=progress, desc="TransFGU crop bank",
                          on_chunk=on_chunk)
    return CropBank(arrays["cls"], arrays["fg"], windows, big, path, key)


# ----------------------------------------------------------------------------------------------------------
# 2. Concepts
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Concepts:
    """``centroids`` (K, D) = [things; stuff]; ``n_things``; ``crop_mask`` (N, W) which crops each group used:
    ``groups`` (N, W) int (0 foreground, 1 background, -1 unused); ``path``; ``key``."""

    centroids: torch.Tensor
    n_things: int
    groups: torch.Tensor
    path: Path
    key: dict

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def crop_labels(self, bank: CropBank) -> torch.Tensor:
        """Each used crop's concept (nearest centroid of its own group, Euclidean); -1 for unused crops. (N, W)."""
        cls = torch.from_numpy(np.asarray(bank.cls, dtype=np.float32))
        labels = torch.full(self.groups.shape, -1, dtype=torch.long)
        parts = [(0, slice(0, self.n_things)), (1, slice(self.n_things, self.k))]
        for group, ks in parts:
            sel = self.groups == group
            if sel.any() and ks.stop > ks.start:
                labels[sel] = assign(cls[sel], self.centroids[ks], metric="euclidean") + ks.start
        return labels


def crop_groups(fg: np.ndarray, n_things: int, n_stuff: int, fg_threshold: float, bg_threshold: float
                ) -> torch.Tensor:
    """(N, W) int: 0 = foreground crop (fg share > fg_threshold), 1 = background crop (bg share > bg_threshold),
    -1 = neither. Without things (n_things = 0) every crop is one group 1; without stuff only foreground counts."""
    fg = torch.from_numpy(np.asarray(fg, dtype=np.float32))
    groups = torch.full(fg.shape, -1, dtype=torch.long)
    if n_things == 0:
        return groups.fill_(1)
    groups[fg > fg_threshold] = 0
    if n_stuff > 0:
        groups[(1 - fg) > bg_threshold] = 1
    return groups


def concepts(cfg, bank: CropBank, n_things: int, n_stuff: int, *, seed: int | None = None) -> Concepts:
    """k-means of the bank's crops (released: Euclidean on raw CLS, 100 iterations, one initialisation), stored."""
    seed = cfg.kmeans_seed if seed is None else seed
    key = {"stage": "transfgu-concepts", "bank": bank.key, "n_things": n_things, "n_stuff": n_stuff,
           "fg_threshold": cfg.fg_threshold, "bg_threshold": cfg.bg_threshold, "seed": seed,
           "iters": cfg.kmeans_iters}
    groups = crop_groups(bank.fg, n_things, n_stuff, cfg.fg_threshold, cfg.bg_threshold)
    k = n_things + n_stuff

    def compute(start, stop):
        cls = torch.from_numpy(np.asarray(bank.cls, dtype=np.float32))
        parts = []
        for group, count in ((0, n_things), (1, n_stuff)):
            if count:
                members = cls[groups == group]
                if members.shape[0] < count:
                    raise ValueError(f"only {members.shape[0]} {'foreground' if group == 0 else 'background'} "
                                     f"crops for {count} concepts: raise bank_limit or lower the threshold")
                parts.append(kmeans(members, count, n_iter=cfg.kmeans_iters, n_init=1, metric="euclidean",
                                    seed=seed)[1])
        return {"centroids": torch.cat(parts).numpy()}

    path = store_dir(key, f"transfgu_concepts_k{k}", cfg.cache_root)
    arrays = build_arrays(path, key, {"centroids": (k, bank.cls.shape[-1])}, compute, chunk_size=k, progress=False)
    return Concepts(torch.from_numpy(np.asarray(arrays["centroids"], dtype=np.float32)), n_things, groups, path, key)


def crop_majority_classes(labels: torch.Tensor, windows: torch.Tensor, n_classes: int,
                          ignore_index: int = 255) -> torch.Tensor:
    """Each window's most frequent class: labels (N, H, W), windows (W, 3) -> (N, W) int64 (-1: only ignore)."""
    valid = labels != ignore_index
    counts = torch.stack([window_fractions((labels == c) & valid, windows) for c in range(n_classes)], -1)
    best = counts.argmax(-1)
    return best.masked_fill(counts.amax(-1) <= 0, -1)


def purity_nmi(concept_ids: torch.Tensor, classes: torch.Tensor) -> dict:
    """Purity (share of crops whose concept's majority class is their own) and NMI (arithmetic normalisation) of
    crop concepts against each crop's majority class; crops with id -1 on either side are dropped."""
    from sklearn.metrics import normalized_mutual_info_score

    keep = (concept_ids >= 0) & (classes >= 0)
    c, y = concept_ids[keep], classes[keep]
    if c.numel() == 0:
        return {"purity": float("nan"), "nmi": float("nan"), "n_crops": 0}
    table = torch.zeros(int(c.max()) + 1, int(y.max()) + 1, dtype=torch.long)
    table.index_put_((c, y), torch.ones_like(c), accumulate=True)
    return {"purity": float(table.amax(1).sum() / c.numel()),
            "nmi": float(normalized_mutual_info_score(y.numpy(), c.numpy())), "n_crops": int(c.numel())}


# ----------------------------------------------------------------------------------------------------------
# 3. Pseudo-label bank
# ----------------------------------------------------------------------------------------------------------

@dataclass
class PseudoLabels:
    """``maps`` (N, K, h, w) fp16 memory map of Grad-CAM maps; ``path``; ``key``."""

    maps: np.ndarray
    path: Path
    key: dict

    def tensor(self, index=slice(None)) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.maps[index], dtype=np.float32))


def split_cosine_maps(patches: torch.Tensor, centroids: torch.Tensor, n_things: int, foreground: torch.Tensor
                      ) -> torch.Tensor:
    """nbseg's alternative to Eq. (7) (``pseudo_maps: cosine``; not the paper's): the cosine of each final patch
    token with each concept, thing concepts kept on foreground patches and stuff concepts on the rest (the crop
    bank's own split, CLS attention > its mean); a concept off its side gets -1, the lowest cosine.

    Why: on the embedded backbone the diagnosis (``benchmarks/transfgu_diagnose.py``) found the Grad-CAM response
    (the last block's value path into CLS) ranks concepts worse than the final patch tokens do, and the unsplit
    maps give most thing pixels a stuff concept. With ``n_things`` 0 (no split) every concept is kept everywhere.

    patches (B, h, w, D), centroids (K, D) = [things; stuff], foreground (B, h, w) bool -> maps (B, K, h, w)."""
    maps = prototype_cosine_maps(patches, centroids)
    return maps if n_things == 0 else keep_group(maps, n_things, foreground, -1.0)


def keep_group(maps: torch.Tensor, n_things: int, thing_mask: torch.Tensor, fill: float) -> torch.Tensor:
    """Thing concepts ``[0, n_things)`` kept where ``thing_mask`` (B, h, w) is true, stuff concepts where it is
    false; the rest set to ``fill``. maps (B, K, h, w) -> same."""
    is_thing = torch.arange(maps.shape[1], device=maps.device)[None, :, None, None] < n_things
    return maps.masked_fill(is_thing != thing_mask[:, None], fill)


def pseudo_label_bank(cfg, backbone, dataset, concept_set: Concepts, *, limit: int | None = None,
                      progress: bool = True, on_chunk=None, tokens_of=None) -> PseudoLabels:
    """Grad-CAM maps (Eq. 7, ``cfg.variant``) of the first ``limit`` images of ``dataset`` at ``cfg.image_size``
    for every concept, stored fp16 and resumable. ``tokens_of(start, stop)`` may supply the last-block inputs
    (benchmarks reuse them across concept sets); ``cfg.gradient`` picks the gradient path (same maps)."""
    key = {"stage": "transfgu-pseudo-labels", **cache_key(backbone, dataset, cfg.image_size, limit),
           "concepts": concept_set.key, "variant": cfg.variant, "mass": cfg.gradcam_mass,
           **({"maps": cfg.pseudo_maps} if cfg.pseudo_maps != "gradcam" else {})}   # Grad-CAM keys unchanged
    n, p = key["n_images"], backbone.patch_size
    grid = cfg.image_size // p

    def compute(start, stop):
        images = load_images(dataset, start, stop, cfg.image_size)
        if cfg.pseudo_maps == "cosine":
            out = backbone.extract(images)
            return {"maps": split_cosine_maps(out.patches, concept_set.centroids, concept_set.n_things,
                                              mean_threshold_saliency(out.attn)).numpy()}
        tokens = tokens_of(start, stop) if tokens_of is not None else last_block_inputs(backbone, images)
        return {"maps": pseudo_label_maps(backbone, images, concept_set.centroids, cfg.variant, cfg.gradient,
                                          tokens=tokens, mass=cfg.gradcam_mass).numpy()}

    name = cfg.variant if cfg.pseudo_maps == "gradcam" else cfg.pseudo_maps
    path = store_dir(key, f"transfgu_pseudo_{backbone.name}_{key['dataset']}_{key['split']}_{name}",
                     cfg.cache_root)
    arrays = build_arrays(path, key, {"maps": (n, concept_set.k, grid, grid)}, compute, chunk_size=cfg.chunk_size,
                          progress=progress, desc=f"TransFGU pseudo labels ({key['split']})", on_chunk=on_chunk)
    return PseudoLabels(arrays["maps"], path, key)


__all__ = ["bank_images", "sliding_windows", "window_fractions", "crop_images", "load_images", "load_labels",
           "CropBank",
           "crop_bank", "Concepts", "crop_groups", "concepts", "crop_majority_classes", "purity_nmi",
           "PseudoLabels", "split_cosine_maps", "keep_group", "pseudo_label_bank", "PSEUDO_MAPS"]
