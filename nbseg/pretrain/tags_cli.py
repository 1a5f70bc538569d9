"""``nbseg pretrain-tags RUN_DIR [--config FILE] [key=value ...]`` and ``nbseg pretrain-tags export RUN_DIR OUT``:
the weakly supervised (caption tags, not DINO) pretraining of :mod:`nbseg.pretrain.caption_tags`."""
from __future__ import annotations

import copy
import json

from nbseg.config import load_config
from nbseg.errors import ConfigError
from nbseg.pretrain.caption_tags import CaptionTagConfig, export_backbone, pretrain_tags


def register_cli(subparsers) -> None:
    keys = ", ".join(CaptionTagConfig.__dataclass_fields__)
    p = subparsers.add_parser(
        "pretrain-tags", help="weakly supervised pretraining of a ViT from caption tags (not DINO; resumable)",
        description="Train a ViT on a world-layout root from image-level tags read from its captions (the class "
                    "nouns; the pixel labels are never read): a CLS tag loss over things and a log-sum-exp pooled "
                    "patch tag loss over every class. Re-running the same command resumes exactly. "
                    "`nbseg pretrain-tags export RUN_DIR OUT_FILE` writes the ViT as a weights file.",
        epilog=f"config keys: {keys}")
    p.add_argument("run_dir", help="run folder (created; an existing one is resumed), or 'export'")
    p.add_argument("rest", nargs="*", help="key=value overrides; after 'export': RUN_DIR OUT_FILE")
    p.add_argument("--config", default=None, help="experiment YAML (keys of the config; overrides win)")
    p.add_argument("--curve", type=int, default=0, metavar="N_VAL",
                   help="measure the backbone's quality (saliency, k-means, linear probe) on N_VAL val images of "
                        "the default world at every epoch end into RUN_DIR/metrics.csv: a learning curve")
    p.add_argument("--fp16", action="store_true", help="export: store weights in float16 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="export: replace OUT_FILE if it exists (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cli)


def curve_probe(n_val: int, n_train: int = 200):
    """``backbone -> quality dict`` on the default world's first ``n_val`` val images (cheap curve points)."""
    from nbseg.backbones import Backbone
    from nbseg.data import load_dataset
    from nbseg.pretrain.quality import backbone_quality

    val_voc = load_dataset("world", split="val", labels="voc")
    val_full = load_dataset("world", split="val", labels="full")
    train_full = load_dataset("world", split="train", labels="full")

    def measure(vit) -> dict:
        # a copy: Backbone freezes the module it wraps and hooks its last block
        backbone = Backbone(copy.deepcopy(vit), "curve", weights_path=None, weights_sha256="", random_init=False)
        q = backbone_quality(backbone, train_full, val_voc, val_full, n_train=n_train, n_val=n_val)
        return {k: v for k, v in q.items() if isinstance(v, float)}
    return measure


def _cli(args) -> int:
    if args.run_dir == "export":
        if len(args.rest) != 2:
            raise ConfigError("usage: nbseg pretrain-tags export RUN_DIR OUT_FILE [--fp16]")
        print(f"wrote {export_backbone(args.rest[0], args.rest[1], fp16=args.fp16, overwrite=args.overwrite)}")
        return 0
    cfg = load_config(CaptionTagConfig, args.config, args.rest)
    quality = curve_probe(args.curve) if args.curve else None
    summary = pretrain_tags(cfg, args.run_dir, progress=not args.no_progress, quality=quality)
    print(json.dumps(summary, indent=1, default=str))
    return 0
