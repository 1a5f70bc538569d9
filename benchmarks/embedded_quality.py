"""Quality of a backbone's frozen features on the world's val split, beside the same architecture at random init.

Measures (issue: the embedded backbone):
  * saliency: head-mean CLS attention kept at 60% of its mass vs the thing-foreground mask (mean per-image IoU,
    also the AlignSeg saliency variant);
  * semantics: dataset-level k-means on patch tokens (K = number of full classes, cosine, Hungarian, mIoU over
    present classes) and a linear probe (logistic regression on frozen patch tokens) on the full label set.

    python benchmarks/embedded_quality.py [--weights FILE] [--json OUT.json]

Defaults: the shipped embedded backbone. The world (default arguments) is generated when absent.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from _report import emit


def measure(backbone, train_full, val_voc, val_full, *, n_train: int, progress: bool = True) -> dict:
    from nbseg.evaluation import evaluate
    from nbseg.probes import extract_dataset, kmeans_segmentation, linear_probe, saliency_iou

    t0 = time.perf_counter()
    val = extract_dataset(backbone, val_full, progress=progress)
    voc_labels = torch.stack([val_voc[i].label for i in range(len(val_voc))])
    train = extract_dataset(backbone, train_full, limit=n_train, progress=progress)
    k = val_full.num_classes
    kmeans = kmeans_segmentation(val.patches, k, scope="dataset", size=val.image_size, seed=0)
    km = evaluate(list(kmeans), list(val.labels), n_clusters=k, n_classes=k, protocol="hungarian",
                  class_names=val_full.class_names)
    probe = linear_probe(train, val, k)
    return {
        "backbone": backbone.describe(),
        "saliency_iou_dino60": saliency_iou(val.attn, voc_labels, fraction=0.6, method="dino").mean().item(),
        "saliency_iou_alignseg60": saliency_iou(val.attn, voc_labels, fraction=0.6, method="alignseg").mean().item(),
        "kmeans_dataset_miou": km.miou,
        "kmeans_dataset_pixel_acc": km.pixel_acc,
        "linear_probe_pixel_acc": probe.pixel_acc,
        "linear_probe_miou": probe.miou,
        "k": k, "n_val": len(val_full), "n_train_probe": min(n_train, len(train_full)),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv=None) -> int:
    from nbseg.backbones import EMBEDDED_ARCH, load
    from nbseg.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="weights file for the embedded architecture (default: shipped)")
    p.add_argument("--n-train", type=int, default=500, help="train images for the linear probe")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--skip-random", action="store_true", help="do not measure the random-init baseline")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    val_voc = load_dataset("world", split="val", labels="voc")
    val_full = load_dataset("world", split="val", labels="full")
    train_full = load_dataset("world", split="train", labels="full")
    trained = load(EMBEDDED_ARCH, weights=args.weights) if args.weights else load("embedded")
    rows = {"trained": measure(trained, train_full, val_voc, val_full, n_train=args.n_train)}
    if not args.skip_random:
        rows["random_init"] = measure(load("embedded", random_init=True), train_full, val_voc, val_full,
                                      n_train=args.n_train)
    report = {"dataset": val_full.describe(), "results": rows}
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
