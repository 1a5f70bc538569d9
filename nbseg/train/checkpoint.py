"""Checkpoints of :func:`nbseg.train.fit` runs: what they hold, reading them with clear errors, rebuilding a method.

A checkpoint (``RUN_DIR/checkpoint.pt``, written atomically: temporary file + rename) is a dict with

* ``kind`` - the method's class name; loading it as another method is an error naming both kinds;
* ``trainable`` - the method's state dict *without* the keys under its ``frozen_prefixes`` (a frozen backbone is
  not copied into every checkpoint; it is identified by ``provenance``, e.g. its name and weights sha256);
* ``optimizer``, ``step``, ``epoch``, ``batch_in_epoch``, ``batches_per_epoch``, ``seconds``, ``rng``;
* ``config`` (the resolved config as a dict), ``config_class``, ``seed``, ``git_revision``, ``provenance``.

Everything in it is a tensor, a number, a string or a container of those (the numpy generator state is stored as a
tensor), so it is read with torch's safe loader (``weights_only=True``): opening a checkpoint never runs code. A
checkpoint written before that (numpy arrays inside) is refused with the fix, unless the user consents to unpickling
(``nbseg --allow-unsafe-pickle``).
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch
from torch import nn

from nbseg.config import from_dict
from nbseg.consent import unsafe_pickle_allowed
from nbseg.errors import ConfigError, NbsegError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1
# Keys a run may be resumed with changed: they decide when and how the work is done, not what is computed.
RESUME_FREE_KEYS = frozenset({"max_steps", "num_workers", "log_every", "checkpoint_every", "device"})

M = TypeVar("M", bound=nn.Module)


class CheckpointError(NbsegError, ValueError):
    """A checkpoint file is missing, unreadable, or belongs to another method or backbone."""


def read_checkpoint_file(path: Path) -> object:
    """``torch.load`` of an nbseg checkpoint with the safe loader. A file the safe loader refuses (a checkpoint from
    before the safe format, or a file that is not nbseg's) is unpickled only with the user's consent
    (:func:`nbseg.consent.unsafe_pickle_allowed`); otherwise a :class:`CheckpointError` names the fix."""
    unreadable = (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not unsafe_pickle_allowed():
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"checkpoint {path} holds Python objects beyond tensors, so the safe loader refused it ({reason}). "
                "Checkpoints written by an older nbseg store the numpy generator that way: if this run is yours, "
                "rerun with `nbseg --allow-unsafe-pickle ...` (Python: nbseg.consent.allow_unsafe_pickle()); "
                "otherwise do not open it") from None
    except unreadable as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); the file is truncated or "
                              "not a torch checkpoint: use another run's checkpoint or re-run training into a new "
                              "folder") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, *unreadable) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None


def load_checkpoint(path: str | Path, expected_kind: str | None = None) -> dict:
    """Read a checkpoint written by :func:`nbseg.train.fit` (to the CPU).

    Raises :class:`CheckpointError` naming the file and the fix when it is missing, truncated or not a torch file,
    not an ``nbseg.train`` checkpoint, or (with ``expected_kind``) a checkpoint of another method.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run folder's {CHECKPOINT} (training writes "
                              "it there) or train first")
    state = read_checkpoint_file(path)
    if not isinstance(state, dict) or "kind" not in state or "trainable" not in state:
        hint = ("it is a `nbseg pretrain` (DINO) checkpoint: use `nbseg pretrain export` to turn it into backbone "
                "weights" if isinstance(state, dict) and "teacher" in state else
                "it may be a weights file or another program's checkpoint")
        raise CheckpointError(f"{path} is not an nbseg training checkpoint (no 'kind'/'trainable' entries); {hint}")
    if expected_kind is not None and state["kind"] != expected_kind:
        raise CheckpointError(f"{path} is a checkpoint of {state['kind']!r}, not of {expected_kind!r}: load it with "
                              f"the {state['kind']} method, or pass a checkpoint of a {expected_kind} run")
    return state


def check_resume_config(saved: Mapping[str, Any], current: Mapping[str, Any], path: str | Path,
                        free_keys: frozenset[str] = RESUME_FREE_KEYS) -> None:
    """Refuse to resume the run at ``path`` with a config that differs in anything but ``free_keys``.

    The error names each differing key with its saved and current value and the two ways out.
    """
    # Keys only the saved config has (knobs since removed) are ignored; a key it lacks (a knob added since) counts
    # as None, which is what a new knob's "off" default should be.
    differing = {k: (saved.get(k), v) for k, v in current.items() if k not in free_keys and saved.get(k) != v}
    if differing:
        detail = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differing.items())
        raise ConfigError(f"{path} was written with another config ({detail}); resume with the saved values (the "
                          f"run folder's config.yaml) or start a new run folder. Only {sorted(free_keys)} may change "
                          "on resume")


def check_provenance(saved: Mapping[str, Any], current: Mapping[str, Any], path: str | Path) -> None:
    """The method's frozen parts (``method.provenance()``: backbone name, weights sha256, ...) must be those the
    checkpoint was trained on, since their weights are not stored in it."""
    keys = dict.fromkeys([*saved, *current])
    differing = {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}
    if differing:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differing.items())
        raise CheckpointError(f"{path} was trained with other frozen parts ({detail}); build the method with the "
                              "backbone and weights file the checkpoint names")


def frozen_prefixes(method: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(method, "frozen_prefixes", ()) or ())


def trainable_state(method: nn.Module) -> dict[str, torch.Tensor]:
    """``method.state_dict()`` without the keys under ``method.frozen_prefixes`` (copied to the CPU)."""
    prefixes = frozen_prefixes(method)
    return {k: v.detach().cpu().clone() for k, v in method.state_dict().items()
            if not (prefixes and k.startswith(prefixes))}


def load_trainable_state(method: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load a :func:`trainable_state` into ``method``: every non-frozen key must be there, and nothing else."""
    expected = set(trainable_state_keys(method))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit this {type(method).__name__}: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}; build the method with the checkpoint's "
                              "config (nbseg.train.build_from_checkpoint)")
    method.load_state_dict(dict(state), strict=False)


def trainable_state_keys(method: nn.Module) -> list[str]:
    prefixes = frozen_prefixes(method)
    return [k for k in method.state_dict() if not (prefixes and k.startswith(prefixes))]


def rng_state() -> dict:
    """The process's generators (torch, CUDA, numpy, random); stored for completeness, since every step re-seeds.
    Only tensors, numbers and strings, so the safe loader reads them: numpy's MT19937 key becomes an int64 tensor."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: Mapping | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    if isinstance(saved, Mapping):
        saved = (saved["kind"], saved["key"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                 saved["cached_gaussian"])
    np.random.set_state(saved)                # a tuple: a checkpoint of an older nbseg (opened with consent)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_from_checkpoint(path: str | Path, config_class: type, factory: Callable[[Any], M],
                          expected_kind: str | None = None) -> tuple[M, Any, dict]:
    """Rebuild a trained method: the config from the checkpoint, ``factory(config)`` for the module, then its
    trainable state. Checks the kind (``expected_kind``, default the built class's name) and the provenance of the
    frozen parts. Returns ``(method, config, checkpoint)``; the method is in eval mode, on the factory's device."""
    state = load_checkpoint(path, expected_kind)
    cfg = from_dict(config_class, state["config"], source=f"{path} (stored config)")
    method = factory(cfg)
    kind = expected_kind or type(method).__name__
    if state["kind"] != kind:
        raise CheckpointError(f"{path} is a checkpoint of {state['kind']!r}, but the factory built a {kind!r}: pass "
                              f"the factory of {state['kind']}")
    if hasattr(method, "provenance"):
        check_provenance(state.get("provenance") or {}, method.provenance(), path)
    load_trainable_state(method, state["trainable"], path)
    return method.eval(), cfg, state
