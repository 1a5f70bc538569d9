"""Quality of a backbone's frozen features on the world's val split, beside the same architecture at random init and
raw-colour k-means, with the embedded backbone's quality bars checked (:mod:`nbseg.pretrain.quality`).

Measures: saliency (head-mean CLS attention at 60% of its mass vs the thing foreground, mean per-image IoU; DINO's
rule and AlignSeg's variant), dataset-level k-means on patch tokens (K = 13 full classes, Hungarian, mIoU over
present classes), a linear probe on frozen patch tokens (full labels), and DCN's per-image vs dataset angles.

    python benchmarks/embedded_quality.py [--backbone embedded|embedded-ssl] [--weights FILE] [--data-root DIR]
                                          [--world-size PX] [--json OUT.json]

Defaults: the shipped default embedded backbone, on the world's probe render (``data/world_192px``: the scenes drawn
at 192 px, where objects are 8-14 patches across; generated when absent). ``--world-size 96`` measures the training
render (``data/world``) instead; ``benchmarks/angle_resolution.py`` shows why the angles need the larger render.
"""
from __future__ import annotations

import argparse
import sys

import torch

from _report import emit


def main(argv=None) -> int:
    from nbseg.backbones import EMBEDDED, EMBEDDED_ARCH, load
    from nbseg.probes.basics import open_dataset
    from nbseg.pretrain.quality import backbone_quality, bars_met, raw_colour_kmeans
    from nbseg.runs import environment_info

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="embedded", help="a backbone name nbseg.backbones.load takes")
    p.add_argument("--weights", default=None, help="weights file of architecture --arch (overrides --backbone)")
    p.add_argument("--arch", default=EMBEDDED_ARCH, help="architecture of --weights (default: the embedded one's)")
    p.add_argument("--n-train", type=int, default=500, help="train images for the linear probe")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--skip-random", action="store_true", help="do not measure the random-init baseline")
    p.add_argument("--data-root", default=None, help="another world root (e.g. `nbseg world DIR --size 192`; its "
                                                    "train split feeds the probe); default: the default world")
    p.add_argument("--world-size", type=int, default=None,
                   help="the default world's render in px (default: the probes' render, 192; 96: the training one)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    val_voc, val_full, train_full = (open_dataset("world", args.data_root, split, labels=labels,
                                                  world_size=args.world_size)
                                     for split, labels in (("val", "voc"), ("val", "full"), ("train", "full")))
    trained = load(args.arch, weights=args.weights) if args.weights else load(args.backbone)
    arch = args.arch if args.weights else EMBEDDED[args.backbone][0] if args.backbone in EMBEDDED else args.backbone
    rows = {"trained": {"backbone": trained.describe(),
                        **backbone_quality(trained, train_full, val_voc, val_full, n_train=args.n_train,
                                           progress=True)}}
    raw = raw_colour_kmeans(val_full)
    report = {"machine": environment_info(), "dataset": val_full.describe(), "raw_colour_kmeans": raw,
              "results": rows}
    if not args.skip_random:
        rows["random_init"] = backbone_quality(load(arch, random_init=True), train_full, val_voc, val_full,
                                               n_train=args.n_train, progress=True)
        report["bars"] = bars_met(rows["trained"], rows["random_init"], raw["miou"])
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
