"""SAN on world/val: the paper's Table-5 claim (reconstruction prevents collapse), throughput and memory.

SAN trained from scratch, no pretrained model; numbers are never the paper's (the paper's Table 5 is COCO-Stuff-3
accuracy with P = 1024, 128-px crops, 30 epochs on 4 V100s).

* Table 5: 3 seeds each of full SAN, without reconstruction, without token matcher, per-image semantics
  (:func:`nbseg.methods.san.claim.measure_table5`): Hungarian pixel accuracy and mIoU on the coarse (3) and full (13)
  labels, collapse diagnostics, raw-RGB and random-CNN k-means at the same K, and the verdict with its rule.
* Throughput: training images/s on this CPU (from the runs' training time).
* Memory: one training step at P = 1024 on 128-px crops (the paper's size) against the world config (P = 64 at
  96 px) and this benchmark's reduced config, same batch: saved activations + parameters, counted
  (:func:`training_step_memory`).

The runs are sized for ~30-40 minutes on 2 shared CPU cores (``--steps``, ``--size``, ``--embed-dim``); the report
states the training length. Run folders live in ``--out`` (rerunning resumes and only re-scores).

    nice -n 10 python benchmarks/san.py --out artifacts/bench_san --json artifacts/bench_san/report.json
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from _report import emit
from nbseg.methods.san.claim import VARIANTS, cpu_budget, measure_table5, training_step_memory


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="artifacts/bench_san")
    p.add_argument("--json", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=60, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="the paper's 1e-4 barely moves a run this short")
    p.add_argument("--size", type=int, default=48, help="world images are prescaled to this size (96 = native)")
    p.add_argument("--embed-dim", type=int, default=32, help="P")
    p.add_argument("--eval-limit", type=int, default=150, help="val images scored (0: all 300)")
    p.add_argument("--memory-batch", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    overrides = cpu_budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, size=args.size,
                           embed_dim=args.embed_dim)
    t0 = time.perf_counter()
    result = measure_table5(args.out, seeds=args.seeds, variants=VARIANTS, overrides=overrides,
                            eval_limit=args.eval_limit or None)
    runs, summary = result["runs"], result["summary"]
    report = {
        "what": "SAN trained from scratch, no pretrained model; world/val; Hungarian matching over the split",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), torch "
                   f"{torch.__version__}, {torch.get_num_threads()} thread(s)",
        "training": f"{args.steps} steps x batch {args.batch_size} = {args.steps * args.batch_size} images "
                    f"(~{args.steps * args.batch_size / 2000:.2f} epochs of world/train) at {args.size} px, "
                    f"P={args.embed_dim}, N=3 (coarse labels), constant lr {args.lr:g}; scored on the first "
                    f"{args.eval_limit or 300} world/val images. The paper trains 30 epochs at P=1024, lr 1e-4",
        "overrides": overrides,
        "verdict": result["verdict"],
        "summary": summary.round(4).to_dict(orient="records"),
        "runs": runs.round(4).to_dict(orient="records"),
        "throughput_images_per_s": {v: float(runs.loc[runs["variant"] == v, "images_per_s"].mean())
                                    for v in runs["variant"].unique()},
        "table5_seconds": round(time.perf_counter() - t0, 1),
    }
    if not args.no_memory:
        b = args.memory_batch
        report["memory_one_training_step"] = {
            "paper size (P=1024, 128 px)": training_step_memory({"embed_dim": 1024, "vit_heads": 16,
                                                                 "decoder_hidden": 256, "crop_size": 128},
                                                                batch_size=b, size=128),
            "world config (P=64, 96 px)": training_step_memory({"embed_dim": 64}, batch_size=b, size=96),
            "this benchmark (P=%d, %d px)" % (args.embed_dim, args.size): training_step_memory(
                {"embed_dim": args.embed_dim, "crop_size": args.size}, batch_size=b, size=args.size)}
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    emit(report, args.json)


if __name__ == "__main__":
    main()
