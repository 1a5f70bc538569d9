"""``nbseg pretrain export``: a run's teacher backbone as a weights file :func:`nbseg.backbones.load` takes."""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from nbseg.errors import NbsegError
from nbseg.io import atomic_write_bytes, check_outputs
from nbseg.pretrain.build import CHECKPOINT
from nbseg.train.run_folder import PRETRAIN, read_run_state, require_kind

__all__ = ["export_teacher"]


def export_teacher(run_dir: str | Path, out_file: str | Path, fp16: bool = False, *, overwrite: bool = False) -> Path:
    """Write the teacher's backbone as a weights file that ``nbseg.backbones.load(ARCH, weights=OUT_FILE)`` takes.

    The file holds ``{"arch", "state_dict", "meta"}``; meta records the run's config, step and provenance. An
    existing ``out_file`` is kept unless ``overwrite``; a run folder of another command is refused by name.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    check_outputs([out_file], inputs=[ckpt_path], overwrite=overwrite, what="weights file")
    state = read_run_state(run_dir)
    if state is None:
        raise NbsegError(f"{run_dir} has no {CHECKPOINT}: is it a `nbseg pretrain` run folder?")
    require_kind(run_dir, state, PRETRAIN, "`nbseg pretrain export` takes the folder of a `nbseg pretrain` run (a "
                                           "method's run already names its backbone weights in its config.yaml)")
    backbone = {k[len("backbone."):]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
    if fp16:
        backbone = {k: v.half() if v.is_floating_point() else v for k, v in backbone.items()}
    meta = {"arch": state["arch"], "step": state["step"], "seconds": state.get("seconds"),
            "config": state["config"], "source": "nbseg pretrain (teacher: the student's moving average)"}
    prov = run_dir / "provenance.json"
    if prov.exists():
        meta["provenance"] = json.loads(prov.read_text())
    buf = io.BytesIO()
    torch.save({"arch": state["arch"], "state_dict": backbone, "meta": meta}, buf)
    return atomic_write_bytes(out_file, buf.getvalue())
