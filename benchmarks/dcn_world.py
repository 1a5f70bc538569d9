"""DCN end to end on the embedded world: train on cached train features, then on the val split compare DCN regions +
k-means region classification with dataset-level k-means on patch tokens, and relate the number of regions DCN
finds in an image to the number of ground-truth classes in it.

    python benchmarks/dcn_world.py [--quick] [--run-dir DIR] [--json OUT.json] [key=value ...]

Steps (the settings of ``nbseg/configs/dcn_world.yaml``, overridden by ``key=value``):

1. train DCN with :func:`nbseg.train.fit` on the cached train features (an existing run in ``--run-dir`` is resumed,
   or reused when finished);
2. val regions at the image size, region embeddings (masked crops -> CLS), foreground detection (Sec. 4.1);
3. Table 1 analogue: k-means of the foreground region embeddings into C = 8 thing classes + background, Hungarian
   mIoU on the ``voc`` labels (9 classes), ``--seeds`` k-means seeds -> mean and std; against dataset-level k-means
   on the val patch tokens into 9 clusters, same protocol and seeds;
4. Table 2 analogue: weighted k-NN of val regions against train regions labelled by their majority class;
5. Pearson / Spearman correlation between regions per image and ground-truth classes per image (``voc`` labels:
   background + things present; ``full`` labels: things and stuff present), counting every region and, separately,
   only regions of at least 1% of the image.

Every step is :func:`nbseg.methods.dcn.evaluation.train_dcn` / :func:`~nbseg.methods.dcn.evaluation.evaluate_dcn`, the
functions notebook ``11_dcn`` calls.

``--quick``: 300 train steps on the first 512 train images, 150 val images, a 300-image k-NN gallery. The embedded
backbone's numbers describe the synthetic world only; they are never the paper's (VOC, DINO ViT-S/8).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _report import emit

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from nbseg.methods.dcn.evaluation import PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_1, PAPER_TABLE_2, evaluate_dcn, \
        load_dcn_config, train_dcn, train_images

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short training and subsets (a smoke measurement)")
    p.add_argument("--run-dir", default=None, help="training run folder (default artifacts/bench/dcn_world[_quick])")
    p.add_argument("--n-val", type=int, default=None, help="val images (default all; quick 150)")
    p.add_argument("--n-gallery", type=int, default=None, help="train images for the k-NN gallery (default: those "
                                                                "DCN trained on; quick 300)")
    p.add_argument("--seeds", type=int, default=10, help="k-means seeds for the mean +- std (paper: 10)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("overrides", nargs="*", help="DCNConfig key=value overrides")
    args = p.parse_args(argv)
    quick = {"max_steps": "300", "cache_limit": "512", "checkpoint_every": "100"} if args.quick else {}
    overrides = {**quick, "device": "cpu", **dict(o.split("=", 1) for o in args.overrides)}
    cfg = load_dcn_config("world", overrides)
    run_dir = Path(args.run_dir or REPO / "artifacts" / "bench" / ("dcn_world_quick" if args.quick else "dcn_world"))
    t0 = time.perf_counter()
    method, summary = train_dcn(cfg, run_dir)
    t_train = time.perf_counter() - t0
    ev = evaluate_dcn(method, val_limit=args.n_val or (150 if args.quick else None),
                      gallery_limit=args.n_gallery or (300 if args.quick else None), seeds=range(args.seeds))
    m = ev.metrics()
    report = {
        "backbone": m["backbone"], "dataset": m["dataset"], "n_val_images": m["n_images"],
        "training": {"steps": summary["steps"], "final_loss": summary["loss"], "run_dir": str(run_dir),
                     "train_images": train_images(cfg), "seconds_to_train": round(t_train, 1)},
        "regions_per_image": {k: m[f"regions/{k}"] for k in ("mean", "min", "max", "histogram")},
        "foreground_fraction_of_regions": m["regions/foreground_fraction"],
        "table1_dcn_kmeans": ev.table1.summary(),
        "baseline_patch_kmeans": ev.baseline,
        "dcn_minus_baseline_miou": m["dcn_minus_baseline_miou"],
        "table2_knn": {k: {"miou": r.miou, "pixel_acc": r.pixel_acc} for k, r in ev.table2.items()},
        "knn_gallery": {"images": m["knn_gallery/images"], "regions": m["knn_gallery/regions"]},
        "regions_vs_gt_classes": ev.count_correlations().set_index("comparison").to_dict("index"),
        "paper_numbers_for_reference": {"table1_miou": PAPER_TABLE_1[-1][1:], "table2_knn_miou_acc": PAPER_TABLE_2,
                                        "source": f"{PAPER_SOURCE}: {PAPER_SETTING['dataset']}, "
                                                  f"{PAPER_SETTING['encoder']}"},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
