"""Run the five probing notebooks (01-05) one by one, time each, and write their key numbers side by side.

Issue #4's acceptance: the full profile on the world's val split runs all five in under 15 minutes on 2 cores.
The report gives the wall time of each notebook (kernel start and imports included) and the total, the CPU time
the notebooks used, the machine's load average at the start and end (other work on the machine stretches the wall
clock), and, for each notebook, its key metrics for the trained backbone beside the same architecture at random
init. Rerun it after the embedded weights change; nothing in it depends on a particular weights file.

    python benchmarks/probe_notebooks.py [--profile full|smoke] [--out DIR] [--markdown REPORT.md] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from _report import emit

PROBES = ["01_attention_thresholds", "02_semantic_consistency", "03_semantic_quality", "04_class_angles",
          "05_tsne_and_clustering"]
# notebook -> (metric suffix after "<role>/", what it is)
KEY_METRICS = {
    "01_attention_thresholds": [
        ("mean/dataset_threshold", "best kept mass fraction over the dataset (head mean)"),
        ("mean/dataset_iou", "foreground IoU at that fraction (head mean)"),
        ("mean/per_image_best_iou", "foreground IoU, each image at its own best fraction (oracle)"),
        ("mean/iou_at_default_fraction", "foreground IoU at the default 60% (head mean)"),
    ],
    "02_semantic_consistency": [
        ("source_image_iou", "prototype IoU on its own image (best threshold)"),
        ("all_images_iou", "prototype IoU over all images of its class (best shared threshold)"),
        ("all_images_iou_source_threshold", "same, at the source image's threshold"),
        ("all_images_per_image_best_iou", "same, each image at its own best threshold (oracle)"),
    ],
    "03_semantic_quality": [
        ("global/salient/miou", "global view, salient region mIoU"),
        ("global/non-salient/miou", "global view, non-salient region mIoU"),
        ("local/salient/miou", "local crops, salient region mIoU"),
        ("local/non-salient/miou", "local crops, non-salient region mIoU"),
        ("table_iv_own_class_top1", "Table IV: share of class prototypes most similar to their own class"),
    ],
    "04_class_angles": [
        ("per_image_intra_deg", "intra-class angle per image (deg; DCN: 44.76)"),
        ("per_image_inter_deg", "inter-class angle per image (deg; DCN: 51.55)"),
        ("dataset_intra_deg", "intra-class angle over the dataset (deg; DCN: 49.28)"),
        ("dataset_inter_deg", "inter-class angle over the dataset (deg; DCN: 24.91)"),
    ],
    "05_tsne_and_clustering": [
        ("per-image k-means/hungarian/miou", "per-image k-means, Hungarian (dataset) protocol mIoU"),
        ("per-image k-means/per-image/miou", "per-image k-means, per-image protocol mIoU"),
        ("dataset k-means/hungarian/miou", "dataset k-means, Hungarian protocol mIoU"),
        ("dataset k-means/per-image/miou", "dataset k-means, per-image protocol mIoU"),
    ],
}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(profile: str, out: Path, overrides: dict) -> dict:
    from nbseg.notebook_runner import find_notebooks, run_notebooks

    timings, metrics = {}, {}
    for stem in PROBES:
        cpu0, t0 = _children_cpu_s(), time.perf_counter()
        run_notebooks(find_notebooks([stem]), profile=profile, overrides=overrides, out_dir=out,
                      timeout=None if profile == "full" else 900)
        timings[stem] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_children_cpu_s() - cpu0, 1)}
        metrics[stem] = json.loads((out / stem / "metrics.json").read_text())
    return {"profile": profile, "timings": timings, "metrics": metrics}


def markdown(report: dict) -> str:
    t = report["timings"]
    first = report["metrics"][PROBES[0]]
    lines = [f"# Probing notebooks 01-05, {report['profile']} profile", "",
             f"Dataset: {first['dataset']}; {first['n_images']} images.  ",
             f"trained: `{first.get('trained/backbone', '-')}`  ",
             f"random_init: `{first.get('random_init/backbone', '-')}`  ",
             f"Load average at start / end: {report['load_start']} / {report['load_end']} on "
             f"{os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.", "",
             "| notebook | wall (s) | CPU (s) |", "|---|---:|---:|"]
    lines += [f"| {stem} | {t[stem]['wall_s']} | {t[stem]['cpu_s']} |" for stem in PROBES]
    lines += [f"| **total** | **{sum(v['wall_s'] for v in t.values()):.1f}** | "
              f"**{sum(v['cpu_s'] for v in t.values()):.1f}** |", ""]
    for stem in PROBES:
        m = report["metrics"][stem]
        lines += [f"## {stem}", "", "| metric | trained | random init |", "|---|---:|---:|"]
        for key, what in KEY_METRICS[stem]:
            cells = [m.get(f"{role}/{key}") for role in ("trained", "random_init")]
            cells = ["-" if v is None else f"{v:.3f}" for v in cells]
            lines.append(f"| {what} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from nbseg.io import atomic_write_text
    from nbseg.notebook_runner import parse_override

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=["full", "smoke"], default="full")
    p.add_argument("--out", type=Path, default=Path("artifacts/probe_notebooks"), help="notebook outputs")
    p.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], type=parse_override,
                   metavar="KEY=VALUE", help="override a parameter of every probe notebook (e.g. WEIGHTS=...)")
    p.add_argument("--markdown", default=None, help="write the report as markdown here")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = run(args.profile, args.out, dict(args.parameters))
    report["load_start"], report["load_end"] = load_start, ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = markdown(report)
    print(text)
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    emit({k: v for k, v in report.items() if k != "metrics"}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
