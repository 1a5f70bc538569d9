"""Frozen features of a dataset, in memory: :func:`extract_dataset` runs a backbone once over a dataset and keeps
patch tokens, CLS, CLS attention, images and labels in a :class:`FeatureSet` (probes, evaluation, figures). The
on-disk fp16 cache that training reuses across epochs and runs is :mod:`nbseg.features.cache`."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nbseg.data import collate_samples
from nbseg.progress import tqdm


@dataclass
class FeatureSet:
    """A dataset seen through a backbone. patches (N, h, w, D), cls (N, D), attn (N, heads, h, w) float32;
    images (N, 3, H, W) in [0, 1] (kept for figures); labels (N, H, W) int64 with 255 = ignore (or None)."""

    patches: torch.Tensor
    cls: torch.Tensor
    attn: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    backbone: str
    dataset: str

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.patches.shape[1:3])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def title(self) -> str:
        """'<backbone> on <dataset>' for figure titles and tables."""
        return f"{self.backbone} on {self.dataset}"

    def subset(self, indices) -> "FeatureSet":
        """The images ``indices`` (a sequence or tensor of positions) of this set, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return FeatureSet(patches=self.patches[index], cls=self.cls[index], attn=self.attn[index],
                          images=self.images[index], labels=None if self.labels is None else self.labels[index],
                          ids=[self.ids[i] for i in index.tolist()], backbone=self.backbone, dataset=self.dataset)


def extract_dataset(backbone, dataset, *, batch_size: int = 32, limit: int | None = None, progress: bool = True
                    ) -> FeatureSet:
    """Run ``backbone.extract`` over ``dataset`` (all images the same size, a multiple of the patch size).

    Args:
        backbone: a :class:`nbseg.backbones.Backbone`.
        dataset: a :class:`nbseg.data.SegDataset` (use its ``transform`` to resize real images).
        limit: use only the first ``limit`` images (smoke runs).
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    feats, images, labels, ids = [], [], [], []
    for start in tqdm(range(0, n, batch_size), desc=f"features ({backbone.name})", disable=not progress):
        batch = collate_samples([dataset[i] for i in range(start, min(n, start + batch_size))])
        out = backbone.extract(batch["image"])
        feats.append(out.to("cpu"))
        images.append(batch["image"])
        if batch["label"] is not None:
            labels.append(batch["label"])
        ids += batch["id"]
    return FeatureSet(
        patches=torch.cat([f.patches for f in feats]), cls=torch.cat([f.cls for f in feats]),
        attn=torch.cat([f.attn for f in feats]), images=torch.cat(images),
        labels=torch.cat(labels) if labels else None, ids=ids, backbone=backbone.describe(),
        dataset=dataset.describe())


__all__ = ["FeatureSet", "extract_dataset"]
