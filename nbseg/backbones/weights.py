"""Reading weights files into a backbone: bare state dicts, DINO training checkpoints (``teacher`` / ``student``,
``module.`` / ``backbone.`` prefixes), ``state_dict`` / ``model`` wrappers, nbseg's exports and ``.safetensors``;
torch's safe loader by default, full unpickling only with the user's consent (:mod:`nbseg.consent`). A file that
does not fit the model is an error naming the file and the mismatched keys (never a silent ``strict=False``)."""
from __future__ import annotations

import argparse
import hashlib
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from nbseg.consent import unsafe_pickle_allowed
from nbseg.errors import WeightsError

__all__ = ["state_dict_sha256", "read_weights_file", "load_state_into"]


def state_dict_sha256(state_dict: dict) -> str:
    """sha256 over the tensors of a state dict in key order (identifies hub or random-init weights)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if torch.is_tensor(t):
            h.update(key.encode())
            # reshape(-1): 0-d tensors (BatchNorm's num_batches_tracked) cannot be viewed as bytes directly
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


# Weights are read with torch's safe loader: tensors, containers and plain values (plus argparse.Namespace, which
# DINO's training checkpoints carry as their arguments). Full unpickling runs code from the file, so it needs the
# user's explicit consent (nbseg.consent, `nbseg --allow-unsafe-pickle`).
def _torch_file_kind(path: Path) -> str | None:
    """``"zip"`` or ``"pickle"`` for the two layouts torch.save writes, None for anything else (text, HTML...)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return None


def _load_torch_file(path: Path, allow_unsafe: bool) -> object:
    if _torch_file_kind(path) is None:
        with open(path, "rb") as f:
            head = f.read(40)
        looks = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
        raise WeightsError(f"{path} is not a PyTorch weights file (it is {looks} starting with {head[:24]!r}); pass "
                           "a .pth / .pt checkpoint or a .safetensors file (a download that failed may have saved "
                           "an error page)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_unsafe:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise WeightsError(
                f"{path} holds Python objects beyond tensors, so the safe loader refused it ({reason}); unpickling "
                "it would run code stored in the file. If you made the file yourself or fully trust its source, "
                "rerun with `nbseg --allow-unsafe-pickle ...` (Python: allow_unsafe_pickle=True)") from None
    except Exception as err:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}); the file "
                           "is truncated or corrupt: download it again") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None


def read_weights_file(path: str | Path, *, allow_unsafe_pickle: bool | None = None) -> dict[str, torch.Tensor]:
    """Read a weights file and return the backbone's state dict (prefixes stripped, heads untouched).

    Accepts a bare state dict, DINO checkpoints (``teacher`` preferred over ``student``), ``state_dict`` /
    ``model`` wrappers, nbseg exports and ``.safetensors``. Files are loaded with torch's safe loader; one that
    needs full unpickling is refused unless ``allow_unsafe_pickle`` (None: the process-wide
    :func:`nbseg.consent.allow_unsafe_pickle` consent) says the user trusts it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist: pass the path of a downloaded checkpoint, e.g. "
                           "dino_deitsmall16_pretrain.pth")
    if path.suffix == ".safetensors":
        try:
            obj = load_file(str(path))
        except Exception as err:
            raise WeightsError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    else:
        allowed = unsafe_pickle_allowed() if allow_unsafe_pickle is None else allow_unsafe_pickle
        obj = _load_torch_file(path, allowed)
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint")
    for key in ("teacher", "state_dict", "model", "student"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    state = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    if not state:
        raise WeightsError(f"{path} contains no tensors")
    return state


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly into ``model``: drop DINO projection-head keys, resample the positional embedding,
    and raise :class:`WeightsError` naming ``source`` and the keys when anything else does not fit."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and k not in own)}
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        npt = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        n_old = state["pos_embed"].shape[1] - npt
        side_old = int(round(n_old ** 0.5))
        side_new = tuple(model.patch_embed.grid_size)
        if side_old * side_old != n_old:
            raise WeightsError(f"{source}: pos_embed has {n_old} patch positions, not a square grid")
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=side_new,
                                                    old_size=(side_old, side_old), num_prefix_tokens=npt)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        def few(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        details = []
        if missing:
            details.append(f"missing keys: {few(missing)}")
        if unexpected:
            details.append(f"unexpected keys: {few(unexpected)}")
        if wrong_shape:
            details.append("shape mismatch: " + few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                     for k in wrong_shape]))
        raise WeightsError(f"{source} does not fit the backbone architecture ({'; '.join(details)}). "
                           "Check that the weights belong to this model name (e.g. patch 8 vs 16, small vs base).")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
