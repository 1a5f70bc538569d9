"""``fit``: the training loop every nbseg method uses (exact resume, DDP, bf16 AMP, atomic checkpoints, CSV log).

The method contract
-------------------
A method is an ``nn.Module`` with

* ``training_step(batch, step: int) -> dict[str, Tensor]``: the scalar ``"loss"`` to minimise plus any other scalar
  terms to log (they are averaged over processes before logging);
* optionally ``frozen_prefixes: tuple[str, ...]`` (e.g. ``("backbone.",)``): state-dict keys under these prefixes
  are frozen (their parameters must have ``requires_grad=False``), kept in eval mode during training and not
  stored in checkpoints;
* optionally ``provenance() -> dict``: what identifies the frozen parts (backbone name, weights sha256); written
  into ``provenance.json`` and every checkpoint, and checked when a run is resumed or rebuilt;
* optionally ``after_step(step: int) -> None``: called after each optimiser step (EMA teachers, prototype
  re-normalisation).
* optionally ``epoch_end(epoch: int, optimizer) -> None``: called at the end of every epoch, after the epoch's
  evaluation and before its checkpoint (TransFGU's teacher refresh between bootstrapping rounds); whatever it
  changes is in that checkpoint, so a resumed run sees the same state;
* optionally a ``"skip_step"`` entry (bool tensor) in ``training_step``'s output: when true the optimiser does not
  step on this batch (TransFGU's released code skips non-positive losses); the step still counts;
* optionally ``ddp_find_unused_parameters = True`` when some trainable parameters get no gradient in a step;
* optionally ``parameter_groups() -> list[dict]``: the AdamW groups, decayed group first (default: no weight decay
  on biases and 1-D parameters, :func:`nbseg.train.parameter_groups`).

Only parameters with ``requires_grad`` are optimised. The loss of ``training_step`` should be a mean over the items
of the local batch: then the DDP gradient average equals the single-process gradient (a loss coupling items across
the batch, e.g. a contrastive one, sees only the local batch under DDP).

The data contract
-----------------
The dataset is indexed with ``(index, seed)`` pairs: ``seed`` (see :func:`nbseg.train.data.item_seed`) is derived
from (config seed, epoch, index) and must seed every random choice of that item, e.g.
``torch.Generator().manual_seed(seed)`` or ``numpy.random.default_rng(seed)``; never the global RNG. Then an item's
augmentation is the same after a resume and for any ``num_workers``. ``collate_fn`` turns a list of items into the
batch that ``training_step`` receives (tensors are moved to the device).

Exact resume
------------
Everything random is a function of (seed, position): epoch order, item augmentations, and the global torch RNG,
re-seeded before every step from (seed, step, rank). The checkpoint stores the trainable state, the optimiser state
and the step, so a run stopped anywhere (``max_steps``, a crash after the last checkpoint) and started again with the
same command continues with exactly the updates of an uninterrupted run (tested bitwise on CPU). The log is cut back
to the checkpoint's step. A resume with a config that differs in anything but :data:`RESUME_FREE_KEYS` is refused.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from nbseg.config import to_dict
from nbseg.errors import ConfigError, NbsegError
from nbseg.io import atomic_torch_save, checkpoint_resume_hint, save_figure
from nbseg.progress import tqdm
from nbseg.runs import git_revision
from nbseg.train.checkpoint import (CHECKPOINT, FORMAT, RESUME_FREE_KEYS, check_provenance, check_resume_config,
                                    frozen_prefixes, load_checkpoint, load_trainable_state, rng_state, set_rng_state,
                                    trainable_state)
from nbseg.train.data import epoch_loader, rank_batches, step_seed, to_device
from nbseg.train.distributed import init_distributed
from nbseg.train.logs import curves_figure, read_log, start_run_folder, write_log
from nbseg.train.run_folder import resumed_line
from nbseg.train.optim import apply_schedule, parameter_groups
from nbseg.train.schedules import cosine_schedule, step_schedule

__all__ = ["TrainConfig", "fit", "RESUME_FREE_KEYS"]

LOG = "log.csv"
METRICS = "metrics.csv"
LR_SCHEDULES = ("cosine", "step")


@dataclass
class TrainConfig:
    """The knobs every method shares; a method's config subclasses this and adds its own fields.

    ``lr`` is the absolute peak learning rate at the global ``batch_size`` (the papers nbseg reproduces quote it
    that way); no linear scaling is applied, so changing ``batch_size`` is a change of recipe.
    """

    epochs: int = 10
    batch_size: int = 32                 # global batch over all processes (each takes batch_size / world)
    lr: float = 1e-3                     # peak lr after warm-up (absolute, not scaled by batch size)
    min_lr: float = 1e-6                 # lr at the end of the cosine decay
    lr_schedule: str = "cosine"          # "cosine" (per step, to min_lr) | "step" (x step_gamma every step_epochs)
    step_epochs: int = 3                 # "step" only: epochs between decays (AlignSeg's released StepLR: 3)
    step_gamma: float = 0.5              # "step" only: factor per decay (AlignSeg's released StepLR: 0.5)
    warmup_epochs: float = 0.0           # linear warm-up from 0 (per step)
    weight_decay: float = 0.05           # AdamW; biases and norm weights get none
    weight_decay_end: float | None = None  # cosine to this value (DINO: 0.04 -> 0.4); None: constant
    clip_grad: float = 0.0               # max global gradient norm; 0: no clipping
    seed: int = 0
    num_workers: int = 0                 # DataLoader workers (results do not depend on it)
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    amp: bool = True                     # bf16 autocast, used on CUDA only
    log_every: int = 10                  # steps between log rows
    checkpoint_every: int = 100          # steps between checkpoints (and at every epoch end)
    max_steps: int | None = None         # stop (with a checkpoint) after this global step: budgets, tests

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run can use; subclasses extend it (call ``super().validate()``)."""
        checks = [(self.epochs >= 1, "epochs must be >= 1"), (self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.lr >= 0 and self.min_lr >= 0, "lr and min_lr must be >= 0"),
                  (0 <= self.warmup_epochs <= self.epochs, "warmup_epochs must be between 0 and epochs"),
                  (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got "
                                                     f"{self.lr_schedule!r}"),
                  (self.step_epochs >= 1 and self.step_gamma > 0, "step_epochs must be >= 1 and step_gamma > 0"),
                  (self.log_every >= 1 and self.checkpoint_every >= 1, "log_every and checkpoint_every must be >= 1"),
                  (self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0 (or None)")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


class _TrainingStep(nn.Module):
    """DDP synchronises gradients of what runs through its ``forward``; this routes ``forward`` to the method's
    ``training_step`` so the method need not define ``forward`` for training."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch, step: int) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch, step)


def _set_train_mode(method: nn.Module) -> None:
    """Train mode, except the frozen submodules (no dropout / drop-path / BN updates in a frozen backbone)."""
    method.train()
    prefixes = frozen_prefixes(method)
    for name, module in method.named_modules():
        if prefixes and (name + ".").startswith(prefixes):
            module.eval()


def _check_method(method: nn.Module) -> None:
    if not callable(getattr(method, "training_step", None)):
        raise TypeError(f"{type(method).__name__} has no training_step(batch, step) method; see nbseg.train.loop")
    prefixes = frozen_prefixes(method)
    trainable_frozen = [n for n, p in method.named_parameters() if p.requires_grad and prefixes
                        and n.startswith(prefixes)]
    if trainable_frozen:
        raise NbsegError(f"{type(method).__name__}: parameters {trainable_frozen[:3]} are under frozen_prefixes "
                         f"{prefixes} but require grad; they would be trained yet not checkpointed. Freeze them "
                         "(requires_grad_(False)) or drop the prefix")


def _log_fields(rows: list[dict]) -> list[str]:
    terms = dict.fromkeys(k for r in rows for k in r if k not in ("step", "epoch", "lr", "weight_decay", "seconds"))
    return ["step", "epoch", *terms, "lr", "weight_decay", "seconds"]


def _figure_title(kind: str, dataset, cfg: TrainConfig, method_prov: dict) -> str:
    """Names the method, the data and the frozen parts (backbone, weights) behind a curve, as every figure must."""
    def short(v):
        return f"{v[:12]}..." if isinstance(v, str) and len(v) > 40 else v

    frozen = ", ".join(f"{k}={short(v)}" for k, v in method_prov.items() if not isinstance(v, (dict, list)))
    data = getattr(dataset, "name", type(dataset).__name__)
    return f"{kind} on {data} (seed {cfg.seed})" + (f"\n{frozen}" if frozen else "")


def fit(method: nn.Module, dataset, cfg: TrainConfig, run_dir: str | Path, *, collate_fn: Callable | None = None,
        progress: bool = True, resume: bool = True,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None) -> dict:
    """Train ``method`` on ``dataset`` with ``cfg`` in ``run_dir`` (created; an existing run is resumed exactly).

    Writes ``config.yaml`` (resolved), ``provenance.json`` (seed, git revision, environment, ``method.provenance()``),
    ``checkpoint.pt`` (atomic; see :mod:`nbseg.train.checkpoint`), ``log.csv`` (step, epoch, every loss term, lr,
    weight_decay, seconds) and ``loss_curve.png``. Launched by ``torchrun`` it runs DistributedDataParallel
    (gloo on CPU, NCCL on CUDA), each process taking a strided slice of every global batch; rank 0 writes files.

    ``evaluate(method) -> {name: value}``, if given, runs on rank 0 (method in eval mode, no grad) at every epoch end
    and when the run stops; its rows go to ``metrics.csv`` and the last one into the summary.

    Optimiser and schedules: AdamW over ``method.parameter_groups()`` when the method defines it (a list of
    ``[decayed group, other groups...]``; group 0's weight decay follows the weight-decay schedule, the others keep
    theirs; AlignSeg uses it to exempt its prototypes as released), else :func:`nbseg.train.parameter_groups` (no
    decay on biases and 1-D parameters). The learning rate follows ``cfg.lr_schedule``: ``"cosine"`` (per step,
    linear warm-up then half-cosine to ``min_lr``) or ``"step"`` (``StepLR``: ``lr * step_gamma ** (epoch //
    step_epochs)``, after the same optional warm-up; ``min_lr`` is unused).

    Returns ``{"steps", "total_steps", "epoch", "loss", "seconds", "run_dir", "finished", "metrics"}``.
    """
    cfg.validate()
    _check_method(method)
    run_dir = Path(run_dir)
    rank, world, device = init_distributed(cfg.device)
    is_main = rank == 0
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"the dataset has {len(dataset)} items, fewer than one batch of {cfg.batch_size}")
    kind = type(method).__name__
    method_prov = method.provenance() if callable(getattr(method, "provenance", None)) else {}

    ckpt_path = run_dir / CHECKPOINT
    state = None
    if ckpt_path.exists():
        if not resume:
            raise NbsegError(f"{run_dir} already holds a run; resume it or choose another folder")
        state = load_checkpoint(ckpt_path, expected_kind=kind)
        check_resume_config(state["config"], to_dict(cfg), ckpt_path)
        check_provenance(state.get("provenance") or {}, method_prov, ckpt_path)

    batches_per_epoch = len(dataset) // cfg.batch_size
    total_steps = cfg.epochs * batches_per_epoch
    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps is not None else total_steps

    method.to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    groups = method.parameter_groups() if callable(getattr(method, "parameter_groups", None)) else \
        parameter_groups(method)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr) if params else None
    start_step = 0
    if state is not None:
        load_trainable_state(method, state["trainable"], ckpt_path)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state.get("rng"))
        start_step = int(state["step"])
        if is_main:
            print(resumed_line(ckpt_path, start_step, total_steps), flush=True)
    runner: nn.Module = _TrainingStep(method)
    if world > 1 and params:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(method, "ddp_find_unused_parameters", False)))

    if cfg.lr_schedule == "step":
        lr_sched = step_schedule(cfg.lr, cfg.epochs, batches_per_epoch, cfg.step_epochs, cfg.step_gamma,
                                 cfg.warmup_epochs)
    else:
        lr_sched = cosine_schedule(cfg.lr, cfg.min_lr, cfg.epochs, batches_per_epoch, cfg.warmup_epochs)
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    wd_sched = cosine_schedule(cfg.weight_decay, wd_end, cfg.epochs, batches_per_epoch)
    amp = cfg.amp and device.type == "cuda"

    log_path, metrics_path = run_dir / LOG, run_dir / METRICS
    revision = git_revision() if is_main else "unknown"
    if is_main:
        start_run_folder(run_dir, cfg, lambda: {"kind": kind, "world_size": world, "method": method_prov})
    rows = read_log(log_path, start_step) if is_main else []
    metric_rows = read_log(metrics_path, start_step) if is_main else []
    elapsed_before = float(state.get("seconds", 0.0)) if state else 0.0
    del state

    def save_checkpoint(step: int, seconds: float) -> None:
        if not is_main:
            return
        epoch, in_epoch = divmod(step, batches_per_epoch)
        atomic_torch_save({
            "format": FORMAT, "kind": kind, "trainable": trainable_state(method),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "step": step, "epoch": epoch, "batch_in_epoch": in_epoch, "batches_per_epoch": batches_per_epoch,
            "seconds": seconds, "rng": rng_state(), "config": to_dict(cfg), "config_class": type(cfg).__name__,
            "seed": cfg.seed, "git_revision": revision, "provenance": method_prov}, ckpt_path,
            resume=checkpoint_resume_hint(ckpt_path))
        write_log(log_path, rows, _log_fields(rows))

    def run_evaluation(step: int, epoch: int) -> None:
        if is_main and evaluate is not None:
            method.eval()
            with torch.no_grad():
                values = evaluate(method)
            _set_train_mode(method)
            metric_rows.append({"step": step, "epoch": epoch, **{k: f"{float(v):.7g}" for k, v in values.items()}})
            write_log(metrics_path, metric_rows, ["step", "epoch", *dict.fromkeys(
                k for r in metric_rows for k in r if k not in ("step", "epoch"))])
        if world > 1 and evaluate is not None:
            dist.barrier()

    bar = tqdm(total=stop_step, initial=start_step, desc=kind, unit="step", disable=not (progress and is_main))
    t_start = time.perf_counter()
    step = start_step
    epoch = start_step // batches_per_epoch
    loss_value = float(rows[-1]["loss"]) if rows else float("nan")
    _set_train_mode(method)
    while step < stop_step:
        epoch, in_epoch = divmod(step, batches_per_epoch)
        batches = rank_batches(len(dataset), cfg.batch_size, cfg.seed, epoch, rank, world, start=in_epoch)
        for batch in epoch_loader(dataset, batches, collate_fn, cfg.num_workers, cfg.seed, epoch):
            if step >= stop_step:
                break
            torch.manual_seed(step_seed(cfg.seed, step, rank))
            if optimizer is not None:
                apply_schedule(optimizer, float(lr_sched[step]), float(wd_sched[step]))
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = runner(batch, step)
            if "loss" not in out:
                raise NbsegError(f"{kind}.training_step returned {sorted(out)}; it must return a dict with 'loss'")
            skip = bool(out.pop("skip_step", False))
            loss = out["loss"].float()
            if not torch.isfinite(loss).item():
                raise NbsegError(f"{kind} loss is {loss.item()} at step {step}: lower lr or set clip_grad; the last "
                                 f"good checkpoint is {ckpt_path}")
            if optimizer is not None and not skip:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                optimizer.step()
            if callable(getattr(method, "after_step", None)):
                method.after_step(step)
            step += 1
            logged = step % cfg.log_every == 0 or step == stop_step
            if logged:
                names = list(out)
                values = torch.stack([torch.as_tensor(out[k], device=device).detach().float().reshape(())
                                      for k in names])
                if world > 1:
                    dist.all_reduce(values)
                    values /= world
                terms = dict(zip(names, values.tolist()))
                loss_value = terms["loss"]
            seconds = elapsed_before + time.perf_counter() - t_start
            bar.update()
            if logged:
                bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr_sched[step - 1]:.2e}", epoch=epoch)
                rows.append({"step": step, "epoch": epoch, **{k: f"{v:.7g}" for k, v in terms.items()},
                             "lr": f"{lr_sched[step - 1]:.6g}", "weight_decay": f"{wd_sched[step - 1]:.6g}",
                             "seconds": f"{seconds:.1f}"})
            epoch_end = step % batches_per_epoch == 0
            if epoch_end:
                run_evaluation(step, epoch)
                if callable(getattr(method, "epoch_end", None)):
                    method.epoch_end(epoch, optimizer)
            if step % cfg.checkpoint_every == 0 or epoch_end or step == stop_step:
                save_checkpoint(step, seconds)
            if step == stop_step and not epoch_end:
                run_evaluation(step, epoch)
    bar.close()
    seconds = elapsed_before + time.perf_counter() - t_start
    if is_main and rows and step > start_step:
        fig = curves_figure(rows, {name: name for name in _log_fields(rows)[2:-3]}, _figure_title(kind, dataset, cfg,
                                                                                                   method_prov))
        save_figure(fig, run_dir / "loss_curve.png")
    if world > 1:
        dist.barrier()
    return {"steps": step, "total_steps": total_steps, "epoch": epoch, "loss": loss_value, "seconds": seconds,
            "run_dir": str(run_dir), "finished": step >= total_steps,
            "metrics": {k: float(v) for k, v in metric_rows[-1].items() if k not in ("step", "epoch")}
            if metric_rows else None}
