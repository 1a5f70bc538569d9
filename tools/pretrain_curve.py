"""A learning curve for a self-supervised `nbseg pretrain` run: train in chunks of N steps (the run resumes exactly
between chunks), export the teacher after each chunk and measure its quality on a few val images of the world.

    python tools/pretrain_curve.py RUN_DIR --every 100 --until 600 [--n-val 100] [--config FILE] [key=value ...]

Writes RUN_DIR/quality_curve.csv (step, seconds, saliency, k-means, probe ...), one row per chunk; rerunning the same
command continues the run and the curve. The caption-tag route measures its curve in-run instead
(`nbseg pretrain-tags RUN_DIR --curve N_VAL`).
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from nbseg.backbones import load
from nbseg.config import load_config
from nbseg.io import atomic_write_text
from nbseg.pretrain.tags_cli import curve_probe
from nbseg.pretrain.train import PretrainConfig, export_teacher, pretrain


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--config", default=None)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--until", type=int, required=True)
    p.add_argument("--n-val", type=int, default=100)
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    curve_path = run / "quality_curve.csv"
    rows = list(csv.DictReader(open(curve_path))) if curve_path.exists() else []
    done = {int(r["step"]) for r in rows}
    measure = curve_probe(args.n_val)
    for stop in range(args.every, args.until + 1, args.every):
        cfg = load_config(PretrainConfig, args.config, [*args.overrides, f"max_steps={stop}"])
        summary = pretrain(cfg, run, progress=False)
        step = int(summary["steps"])
        if step in done:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            weights = export_teacher(run, Path(tmp) / "teacher.pt")
            quality = measure(load(cfg.arch, weights=weights).model)
        rows.append({"step": step, "seconds": round(float(summary["seconds"]), 1),
                     **{k: round(v, 4) for k, v in quality.items()}})
        done.add(step)
        fields = list(rows[-1])
        text = ",".join(fields) + "\n" + "".join(",".join(str(r.get(f, "")) for f in fields) + "\n" for r in rows)
        atomic_write_text(curve_path, text)
        print(rows[-1], flush=True)
        if summary.get("finished"):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
