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


def raw_colour_kmeans(labels: str, max_pixels: int = 400_000) -> dict:
    from nbseg.cluster import assign, kmeans
    from nbseg.data import load_dataset
    from nbseg.evaluation import evaluate

    ds = load_dataset("world", split="val", labels=labels)
    images = torch.stack([ds[i].image for i in range(len(ds))])          # (N, 3, H, W)
    gts = [ds[i].label for i in range(len(ds))]
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    sample = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))[:max_pixels]]
    k = ds.num_classes
    _, centroids, _ = kmeans(sample, k, metric="euclidean", seed=0, n_init=3)
    preds = assign(pixels, centroids, metric="euclidean").reshape(images.shape[0], *images.shape[-2:])
    r = evaluate(list(preds), gts, n_clusters=k, n_classes=k, protocol="hungarian")
    return {"labels": labels, "K": k, "miou": round(r.miou, 4), "pixel_acc": round(r.pixel_acc, 4),
            "mean_over": r.mean_over, "n_images": len(ds)}


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
