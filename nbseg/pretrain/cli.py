"""``nbseg pretrain RUN_DIR [--config FILE] [key=value ...]`` and ``nbseg pretrain export RUN_DIR OUT_FILE``."""
from __future__ import annotations

import json

from nbseg.config import load_config
from nbseg.errors import ConfigError
from nbseg.pretrain.train import PretrainConfig, export_teacher, pretrain


def register_cli(subparsers) -> None:
    keys = ", ".join(PretrainConfig.__dataclass_fields__)
    p = subparsers.add_parser(
        "pretrain", help="DINO self-supervised pretraining of a ViT (resumable); `pretrain export` writes weights",
        description="Train a ViT with DINO self-distillation on a dataset nbseg knows or a folder of images. "
                    "Re-running the same command resumes from RUN_DIR/checkpoint.pt exactly. Launch with "
                    "`torchrun --nproc_per_node N -m nbseg pretrain ...` for several GPUs (or CPU processes). "
                    "Use `nbseg pretrain export RUN_DIR OUT_FILE` to write the teacher backbone as weights for "
                    "nbseg.backbones.load(ARCH, weights=OUT_FILE).",
        epilog=f"config keys: {keys}")
    p.add_argument("run_dir", help="run folder (created; an existing one is resumed), or 'export'")
    p.add_argument("rest", nargs="*", help="key=value overrides; after 'export': RUN_DIR OUT_FILE")
    p.add_argument("--config", default=None, help="experiment YAML (keys of the config; overrides win)")
    p.add_argument("--fp16", action="store_true", help="export: store weights in float16 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="export: replace OUT_FILE if it exists (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.run_dir == "export":
        if len(args.rest) != 2:
            raise ConfigError("usage: nbseg pretrain export RUN_DIR OUT_FILE [--fp16]")
        out = export_teacher(args.rest[0], args.rest[1], fp16=args.fp16, overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0
    cfg = load_config(PretrainConfig, args.config, args.rest)
    summary = pretrain(cfg, args.run_dir, progress=not args.no_progress)
    print(json.dumps(summary, indent=1))
    return 0
