"""Per-step hyper-parameter schedules, as pure functions of the step (so a resumed run needs only the step).

DINO (Caron et al. 2021), MAE, STEGO-style head training and most methods nbseg reproduces use the same shape: a
linear warm-up followed by a half-cosine decay, evaluated once per optimiser step (not per epoch). Some released
recipes use a step decay instead (AlignSeg: PyTorch ``StepLR``, x0.5 every 3 epochs): :func:`step_schedule`.
"""
from __future__ import annotations

import numpy as np


def cosine_schedule(base_value: float, final_value: float, epochs: int, iters_per_epoch: int,
                    warmup_epochs: float = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """Per-iteration values: linear warm-up from ``start_warmup_value`` to ``base_value`` over ``warmup_epochs``,
    then a half-cosine from ``base_value`` to ``final_value``. Shape (epochs * iters_per_epoch,).

    ``base_value == final_value`` with no warm-up gives a constant (a fixed weight decay)."""
    total = epochs * iters_per_epoch
    warmup_iters = int(round(warmup_epochs * iters_per_epoch))
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters, endpoint=False) if warmup_iters else np.array([])
    steps = np.arange(total - warmup_iters)
    n = max(len(steps), 1)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * steps / n))
    return np.concatenate([warmup, cosine])[:total]


def step_schedule(base_value: float, epochs: int, iters_per_epoch: int, step_epochs: int, gamma: float,
                  warmup_epochs: float = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """Per-iteration values of PyTorch's ``StepLR`` stepped once per epoch: ``base_value * gamma ** (epoch //
    step_epochs)``, after an optional linear warm-up (as in :func:`cosine_schedule`). Shape (epochs *
    iters_per_epoch,).

    AlignSeg's released schedule is ``step_schedule(5e-4, 10, n, step_epochs=3, gamma=0.5)``: 5e-4 for epochs 0-2,
    2.5e-4 for 3-5, 1.25e-4 for 6-8, 6.25e-5 for epoch 9."""
    if step_epochs < 1:
        raise ValueError(f"step_epochs must be >= 1, got {step_epochs}")
    total = epochs * iters_per_epoch
    epoch_of_step = np.arange(total) // max(iters_per_epoch, 1)
    values = base_value * gamma ** (epoch_of_step // step_epochs).astype(np.float64)
    warmup_iters = min(int(round(warmup_epochs * iters_per_epoch)), total)
    if warmup_iters:
        values[:warmup_iters] = np.linspace(start_warmup_value, base_value, warmup_iters, endpoint=False)
    return values
