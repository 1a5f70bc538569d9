"""AdamW parameter groups and the per-step schedule update (DINO's recipe, shared by every method)."""
from __future__ import annotations

import torch
from torch import nn


def parameter_groups(model: nn.Module) -> list[dict]:
    """Trainable parameters in two groups: ``[decayed, not decayed]``.

    No weight decay on biases and norm parameters (1-D tensors), as in DINO; frozen parameters
    (``requires_grad=False``) are left out. The order matters: :func:`apply_schedule` decays group 0 only.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set this step's learning rate on every group and its weight decay on group 0 (see :func:`parameter_groups`).
    Stored as Python floats: a numpy scalar from a schedule array would keep the checkpoint from the safe loader."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = float(lr)
        if i == 0:
            group["weight_decay"] = float(weight_decay)
