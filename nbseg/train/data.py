"""Epoch order, per-item seeds and rank sharding: what makes a resumed or multi-process run exact.

Why: a run that is stopped and resumed must compute the same updates as one that never stopped, whatever the number
of DataLoader workers or processes. Nothing here keeps state between calls; every random choice is a pure function
of the config seed and a position:

* the order of epoch ``e`` is a permutation seeded by (seed, e) (:func:`epoch_batches`), so resuming at batch ``k``
  of epoch ``e`` just skips the first ``k`` batches of the same list;
* item ``i`` of epoch ``e`` is augmented with a generator seeded by :func:`item_seed` (seed, e, i), which the
  sampler hands to the dataset together with the index (``dataset[(i, seed)]``), so a worker's own RNG state (which
  depends on how many workers there are) never enters the data;
* the global torch RNG is re-seeded before every step from (seed, step, rank) (:func:`step_seed`), so dropout /
  stochastic depth after a resume are those of the uninterrupted run without restoring any generator.

Rank sharding: with ``world`` processes, rank ``r`` takes the strided slice ``batch[r::world]`` of every *global*
batch (:func:`rank_batches`). The processes together see exactly the single-process batch, each local batch is
``batch_size / world`` items, and DistributedDataParallel's gradient average of per-rank means equals the
single-process mean for losses that average over items, so a DDP run reproduces a one-process run (up to float
summation order).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch


def seed_of(*parts: int) -> int:
    """A well-mixed 32-bit seed from integer parts (numpy ``SeedSequence``): nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of item ``index`` in ``epoch``: the same after a resume and for any worker count."""
    return seed_of(seed, epoch, index)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global torch RNG seed of optimiser step ``step`` on process ``rank`` (dropout, stochastic depth)."""
    return seed_of(seed, step, rank, 11)


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of ``epoch``: a permutation seeded by (seed, epoch), last partial batch dropped."""
    gen = torch.Generator().manual_seed(seed_of(seed, epoch, 7))
    perm = torch.randperm(n_items, generator=gen).tolist()
    n_batches = n_items // batch_size
    return [perm[k * batch_size:(k + 1) * batch_size] for k in range(n_batches)]


def rank_batches(n_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start: int = 0) -> list[list[tuple[int, int]]]:
    """This process's share of the global batches of ``epoch`` from batch ``start`` on, as ``(index, item_seed)``
    pairs: rank ``r`` of ``world`` takes ``batch[r::world]`` of each global batch of ``batch_size`` items."""
    return [[(i, item_seed(seed, epoch, i)) for i in batch[rank::world]]
            for batch in epoch_batches(n_items, batch_size, seed, epoch)[start:]]


def epoch_loader(dataset, batches: Sequence[Sequence[Any]], collate_fn: Callable | None, num_workers: int,
                 seed: int, epoch: int) -> torch.utils.data.DataLoader:
    """A DataLoader that yields exactly ``batches`` (each a list of dataset keys) in order.

    It gets its own generator, so creating it never draws from the global torch RNG (the DataLoader otherwise
    takes its worker base seed from there)."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=[list(b) for b in batches], collate_fn=collate_fn,
                                       num_workers=num_workers, persistent_workers=False,
                                       generator=torch.Generator().manual_seed(seed_of(seed, epoch, 13)))


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested dict / list / tuple) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch
