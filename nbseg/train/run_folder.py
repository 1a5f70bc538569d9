"""What a run folder holds, checked before any work starts: which command wrote it, whether the config fits, how far
it got.

Why before: a run folder of another command (``nbseg pretrain`` into an AlignSeg folder, ``pretrain export`` of a
method's run) used to fail deep inside with a ``KeyError`` or a list of config differences, and a changed config
key was reported only after minutes of feature extraction. Every command that trains into, resumes or reads a run
folder asks here first, so the answer is one line naming the folder, what it holds, and the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


from nbseg.errors import ConfigError
from nbseg.train.checkpoint import CheckpointError, check_resume_config, read_checkpoint_file

CHECKPOINT = "checkpoint.pt"
PRETRAIN = "pretrain"  # the kind of a `nbseg pretrain` run (its checkpoint has a teacher, not a kind entry)
COMMANDS = {"AlignSeg": "nbseg train alignseg", "DCN": "nbseg train dcn", PRETRAIN: "nbseg pretrain"}


def describe_kind(kind: str) -> str:
    if kind == PRETRAIN:
        return "a DINO pretraining run (`nbseg pretrain`)"
    if kind in COMMANDS:
        return f"an {kind} training run (`{COMMANDS[kind]}`)" if kind[0] in "AEIOU" else \
            f"a {kind} training run (`{COMMANDS[kind]}`)"
    return f"a checkpoint of unknown kind {kind!r}"


def checkpoint_kind(state: Mapping[str, Any]) -> str:
    """``kind`` of an ``nbseg.train.fit`` checkpoint, :data:`PRETRAIN` for a ``nbseg pretrain`` one."""
    if "kind" in state:
        return str(state["kind"])
    if "teacher" in state and "student" in state:
        return PRETRAIN
    return "unknown"


def read_run_state(run_dir: str | Path) -> dict | None:
    """The checkpoint of ``run_dir`` (a folder or the checkpoint file), or None when the folder holds none yet.
    An unreadable file is a :class:`~nbseg.train.checkpoint.CheckpointError` naming it."""
    path = Path(run_dir)
    if path.is_dir() or not path.suffix:
        path = path / CHECKPOINT
    if not path.is_file():
        return None
    state = read_checkpoint_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not an nbseg checkpoint: use another run folder")
    return state


def require_kind(run_dir: str | Path, state: Mapping[str, Any], expected: str, fix: str) -> None:
    """Refuse a run folder that another command wrote: one line saying what it holds and ``fix``."""
    kind = checkpoint_kind(state)
    if kind != expected:
        raise ConfigError(f"{run_dir} holds {describe_kind(kind)}, not {describe_kind(expected)}; {fix}")


def check_before_work(run_dir: str | Path, expected: str, config: Mapping[str, Any],
                      defaults: Mapping[str, Any] | None = None, migrate=None) -> dict | None:
    """Before any data is read: the checkpoint of ``run_dir`` (None for a new run) after checking that it is a run
    of ``expected`` kind and that ``config`` may resume it (:func:`nbseg.train.checkpoint.check_resume_config`;
    ``defaults`` fill keys the saved config lacks, ``migrate`` maps a saved config to today's key names)."""
    state = read_run_state(run_dir)
    if state is None:
        return None
    require_kind(run_dir, state, expected, f"choose a new run folder for `{COMMANDS.get(expected, expected)}`")
    saved = dict(state.get("config") or {})
    saved = {**(defaults or {}), **(migrate(saved) if migrate else saved)}
    check_resume_config(saved, config, Path(run_dir) / CHECKPOINT)
    return state


def run_progress(state: Mapping[str, Any]) -> tuple[int, int | None]:
    """(step reached, total steps of the run) of a ``fit`` checkpoint; the total is None when unknown."""
    step = int(state.get("step", 0))
    epochs = (state.get("config") or {}).get("epochs")
    per_epoch = state.get("batches_per_epoch")
    return step, (int(epochs) * int(per_epoch) if epochs and per_epoch else None)


def resumed_line(path: str | Path, step: int, total: int | None) -> str:
    """The line a resumed run prints, so a user sees that it continued rather than started over."""
    of = f" of {total}" if total else ""
    return f"resumed from step {step}{of} ({path})"


__all__ = ["checkpoint_kind", "read_run_state", "require_kind", "check_before_work", "run_progress", "resumed_line",
           "describe_kind", "PRETRAIN"]
