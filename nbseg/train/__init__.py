"""nbseg's shared training loop: every method trains through :func:`fit`.

* :class:`TrainConfig` - the shared knobs (a method's config subclasses it); load it with
  ``nbseg.config.load_config(MyConfig, experiment_yaml, ["key=value", ...])`` (unknown keys are errors).
* :func:`fit` - AdamW with a cosine (or StepLR, ``lr_schedule="step"``) lr schedule, cosine weight decay and
  linear warm-up per step, the method's own ``parameter_groups()`` when it has them, bf16 autocast on CUDA,
  DistributedDataParallel under ``torchrun``, atomic checkpoints with exact resume, tqdm progress, CSV log and loss
  curve. The method and data contracts are described in :mod:`nbseg.train.loop`.
* :func:`load_checkpoint` / :func:`build_from_checkpoint` - read a run's checkpoint (clear errors for a missing,
  corrupt or other-method file) and rebuild the method from the config stored in it.
* Pure pieces shared with ``nbseg pretrain``: :func:`cosine_schedule`, :func:`step_schedule`, :func:`parameter_groups`,
  :func:`epoch_batches`, :func:`rank_batches`, :func:`item_seed`.
"""
from nbseg.train.checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint
from nbseg.train.data import epoch_batches, item_seed, rank_batches
from nbseg.train.loop import RESUME_FREE_KEYS, TrainConfig, fit
from nbseg.train.optim import parameter_groups
from nbseg.train.schedules import cosine_schedule, step_schedule

__all__ = ["TrainConfig", "fit", "load_checkpoint", "build_from_checkpoint", "CheckpointError", "RESUME_FREE_KEYS",
           "cosine_schedule", "step_schedule", "parameter_groups", "epoch_batches", "rank_batches", "item_seed"]
