"""The embedded world: generation time with the default arguments, and how far raw colour gets.

Generation is timed into a fresh temporary folder (the command users run: ``nbseg world``). The colour baseline is
dataset-level k-means on raw RGB pixels (K = number of classes, Hungarian matching, mIoU over present classes) on
the val split, for the full label set (13 classes) and the VOC label set (things + background).

    python benchmarks/world_stats.py [--json OUT]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from _report import emit


def raw_colour_kmeans(labels: str) -> dict:
    from nbseg.data import load_dataset
    from nbseg.pretrain.quality import raw_colour_kmeans as measure

    return {"labels": labels, **{k: round(v, 4) if isinstance(v, float) else v
                                 for k, v in measure(load_dataset("world", split="val", labels=labels)).items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from nbseg.cli import main as nbseg_main
    from nbseg.runs import environment_info
    from nbseg.world import ensure_world

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        nbseg_main(["world", str(Path(tmp) / "world")])
        seconds = time.perf_counter() - t0
    ensure_world()
    report = {"machine": environment_info(), "generation_seconds_default_args": round(seconds, 1),
              "raw_colour_kmeans": [raw_colour_kmeans("full"), raw_colour_kmeans("voc")]}
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
