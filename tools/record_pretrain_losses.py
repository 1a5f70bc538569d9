"""Record the per-step losses of tiny ``nbseg pretrain`` runs, one per objective, to check a refactor against.

Each run (a 32 px world of 8 images, 4 steps) logs every step; the script keeps every loss column of ``log.csv``
and, as a fingerprint of the final state, the float64 sum and sum of squares of the teacher's tensors and of the two
centers. ``tests/test_pretrain_equivalence.py`` reruns :func:`run_all` and compares with
``tests/data/pretrain_losses_before_split.json`` (recorded before ``pretrain()`` was split into build / step / loop
and the optional objectives moved out of DINO's path).

It uses only ``nbseg.config.load_config``, ``nbseg.pretrain.PretrainConfig`` / ``pretrain`` and
``nbseg.world.write_world``, which the split keeps, so it runs unchanged on the code before and after.

    python tools/record_pretrain_losses.py                      # record (about a minute on 2 CPU cores)
    python tools/record_pretrain_losses.py --out /tmp/now.json  # record elsewhere, to compare by hand
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
from pathlib import Path

import torch

from nbseg.config import load_config
from nbseg.pretrain import PretrainConfig, pretrain
from nbseg.world import WorldSpec, write_world

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "pretrain_losses_before_split.json"

BASE = dict(data="world", image_size=32, global_size=16, local_size=8, n_local=2, batch_size=4, epochs=2,
            warmup_epochs=1, out_dim=32, head_hidden_dim=16, bottleneck_dim=8, checkpoint_every=2, log_every=1,
            drop_path_rate=0.1, device="cpu")
# One run per path through the step: DINO as published (per-image views, then on-device views), and each optional
# objective (iBOT's masked patch loss with the teacher recoloured, cross-view + Sinkhorn + colour tables, dense
# InfoNCE, MAE alone, DINO + MAE).
RUNS = {
    "dino": {},
    "dino_device_views": {"augment_on": "device"},
    "ibot_patch_recolour": {"augment_on": "device", "patch_loss_weight": 1.0, "teacher_recolour": True},
    "cross_view_sinkhorn_lut": {"augment_on": "device", "cross_view_loss_weight": 1.0,
                                "teacher_targets": "sinkhorn", "colour_lut_p": 0.5},
    "dense_contrastive_patch": {"augment_on": "device", "patch_loss_weight": 0.5, "dense_contrastive_weight": 1.0,
                                "contrastive_max_queries": 8},
    "mae_alone": {"augment_on": "device", "dino_loss_weight": 0.0, "mae_loss_weight": 1.0, "mae_decoder_dim": 16,
                  "mae_decoder_heads": 2},
    "dino_and_mae": {"augment_on": "device", "mae_loss_weight": 0.5, "mae_decoder_dim": 16, "mae_decoder_heads": 2},
}
LOSS_COLUMNS = ("loss", "patch_loss", "cross_view_loss", "contrastive_loss", "mae_loss")


def fingerprint(tensors: dict) -> list[float]:
    """[sum, sum of squares] in float64 over every floating tensor: any changed value changes it."""
    values = [t.double() for t in tensors.values() if torch.is_tensor(t) and t.is_floating_point()]
    return [float(sum(v.sum() for v in values)), float(sum((v * v).sum() for v in values))]


def run_one(world: Path, run_dir: Path, overrides: dict) -> dict:
    cfg = load_config(PretrainConfig, overrides={**BASE, "data_root": str(world), **overrides})
    pretrain(cfg, run_dir, progress=False)
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return {"losses": {c: [float(r[c]) if r.get(c) else None for r in rows] for c in LOSS_COLUMNS},
            "teacher": fingerprint(state["teacher"]),
            "centers": fingerprint({"center": state["center"], "center_patch": state["center_patch"]})}


def run_all(tmp: Path) -> dict:
    world = write_world(tmp / "world", WorldSpec(size=32, n_train=8, n_val=2), workers=1, progress=False)
    return {name: run_one(world, tmp / name, overrides) for name, overrides in RUNS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_all(Path(tmp))
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    record = {"git_revision": revision, "base": BASE, "runs_overrides": RUNS, "runs": runs}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
