"""AlignSeg's in-memory cache of the frozen backbone's output for training crops (speed only: the same crops give
the same tokens, so ablations that share the crops run the backbone once)."""
from __future__ import annotations

import torch

from nbseg.errors import ConfigError


class CropFeatureCache:
    """In-memory store of the frozen backbone's output for training crops: tokens and saliency masks per item,
    keyed by (image index, item seed).

    A crop is a function of its item seed (:mod:`nbseg.data.multicrop`), and the training loop derives the item seeds
    from (run seed, epoch, index), so two runs with the same seed, data, crop geometry and backbone see the same
    crops whatever their K, L, losses, h, lr, batch size or variant. Give them one cache
    (``method.feature_cache = cache``) and the backbone runs once per crop. A hit returns what the backbone computed
    for that crop when it was first seen, so results equal an uncached run up to the float summation order of the
    backbone batch the crop was computed in (bitwise equal when the batches are the same, e.g. a resumed run).

    The first run fixes the signature (backbone, data, crop geometry); a method with another one is refused.
    Memory: (1 + v_l) * tokens * D float32 per item and epoch (~150 KB for the world's 64-px crops, D = 192).
    """

    def __init__(self):
        self._items: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.signature: tuple | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def check(self, signature: tuple) -> None:
        if self.signature is None:
            self.signature = signature
        elif signature != self.signature:
            raise ConfigError(f"this CropFeatureCache holds crops of {self.signature}, not of {signature}: use one "
                              "cache per backbone, dataset and crop geometry")

    def lookup(self, keys: torch.Tensor, n_local: int):
        """(x_g (B, n, D), m_g (B, n), x_l (B, V, m, D), m_l (B, V, m)) for the (B, 2) ``keys`` and V = ``n_local``
        local crops, or None (counted as a miss) unless every item is stored with at least V local crops."""
        found = [self._items.get((int(i), int(s))) for i, s in keys.tolist()]
        if any(f is None or f[2].shape[0] < n_local for f in found):
            self.misses += 1
            return None
        self.hits += 1
        return (torch.stack([f[0] for f in found]), torch.stack([f[1] for f in found]),
                torch.stack([f[2][:n_local] for f in found]), torch.stack([f[3][:n_local] for f in found]))

    def store(self, keys: torch.Tensor, x_g: torch.Tensor, m_g: torch.Tensor, x_l: torch.Tensor,
              m_l: torch.Tensor) -> None:
        """Keep item b's (x_g[b], m_g[b], x_l[b], m_l[b]) on the CPU under ``keys[b]``."""
        x_g, m_g, x_l, m_l = (t.detach().cpu() for t in (x_g, m_g, x_l, m_l))
        for b, (i, s) in enumerate(keys.tolist()):
            self._items[(int(i), int(s))] = (x_g[b].clone(), m_g[b].clone(), x_l[b].clone(), m_l[b].clone())


__all__ = ["CropFeatureCache"]
