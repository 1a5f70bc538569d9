"""Where a pretraining step's CPU time goes: views (augmentation), forward (student + teacher), backward, gradient
clipping + optimiser, EMA, for `nbseg pretrain` (DINO) and `nbseg pretrain-tags` (caption tags) on the world.

Runs a few steps of each under cProfile and reports seconds per step by component (cumulative time of the
functions that implement it), so a change that makes a step cheaper shows up here, not in a timed test.

    python benchmarks/pretrain_step_profile.py [--steps 6] [--json OUT.json] [key=value ...]  # overrides for DINO

Defaults: `nbseg/configs/pretrain_embedded.yaml` (DINO as the embedded run used it) and the caption-tag defaults.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import torch

from _report import emit

REPO = Path(__file__).resolve().parent.parent
# component -> (module file suffix, function name) whose cumulative time measures it
# (a tuple of suffixes: any of those files; the forward is DINO's net, or the objectives' net when one is selected)
DINO_PARTS = {
    "views (CPU multi-crop)": ("data/multicrop.py", "__call__"),
    "views (batched, on device)": ("pretrain/batched_augment.py", "__call__"),
    "forward (student + teacher)": (("pretrain/dino.py", "pretrain/objectives/network.py"), "forward"),
    "backward": ("torch/_tensor.py", "backward"),
    "gradient clipping": ("pretrain/dino.py", "clip_gradients_"),
    "optimiser step": ("torch/optim/adam.py", "step"),
    "EMA teacher update": ("pretrain/dino.py", "ema_update_"),
}
TAG_PARTS = {
    "views (per-image crop, flip, jitter)": ("pretrain/caption_tags.py", "__getitem__"),
    "forward": ("pretrain/caption_tags.py", "training_step"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimiser step": ("torch/optim/adam.py", "step"),
}


def _components(profile: cProfile.Profile, parts: dict, steps: int) -> dict:
    stats = pstats.Stats(profile).stats
    out = {}
    for label, (suffix, func) in parts.items():
        # the outermost function of that name in that file (e.g. StudentTeacherNet.forward, not its head's)
        total = max((v[3] for (file, _, name), v in stats.items() if file.endswith(suffix) and name == func), default=0)
        if total:
            out[label] = round(total / steps, 3)
    wall = max(v[3] for v in stats.values())
    out["whole step"] = round(wall / steps, 3)
    return out


def profile_dino(steps: int, overrides: list[str]) -> dict:
    from nbseg.config import load_config
    from nbseg.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, REPO / "nbseg/configs/pretrain_embedded.yaml",
                      [f"max_steps={steps + 1}", "checkpoint_every=1000", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(load_config(PretrainConfig, REPO / "nbseg/configs/pretrain_embedded.yaml",
                             ["max_steps=1", *overrides]), Path(tmp) / "run", progress=False)   # warm-up step
        profile = cProfile.Profile()
        profile.enable()
        pretrain(cfg, Path(tmp) / "run", progress=False)
        profile.disable()
    return {"config": f"pretrain_embedded.yaml {' '.join(overrides)}".strip(), "batch_size": cfg.batch_size,
            "seconds_per_step": _components(profile, DINO_PARTS, steps)}


def profile_tags(steps: int) -> dict:
    from nbseg.pretrain.caption_tags import CaptionTagConfig, pretrain_tags

    with tempfile.TemporaryDirectory() as tmp:
        pretrain_tags(CaptionTagConfig(max_steps=1), Path(tmp) / "run", progress=False)
        profile = cProfile.Profile()
        profile.enable()
        pretrain_tags(CaptionTagConfig(max_steps=steps + 1), Path(tmp) / "run", progress=False)
        profile.disable()
    return {"config": "CaptionTagConfig defaults", "batch_size": CaptionTagConfig.batch_size,
            "seconds_per_step": _components(profile, TAG_PARTS, steps)}


def main(argv=None) -> int:
    from nbseg.runs import environment_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the DINO config")
    args = p.parse_args(argv)
    report = {"machine": environment_info(), "torch_threads": torch.get_num_threads(),
              "dino": profile_dino(args.steps, args.overrides), "caption_tags": profile_tags(args.steps)}
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
