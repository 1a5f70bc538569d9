"""Write nbseg/assets/EMBEDDED_MODEL_CARD.md from a pretraining run folder and the quality benchmark's JSON.

    python tools/write_model_card.py RUN_DIR QUALITY.json [--command "..."]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from nbseg.backbones import EMBEDDED_WEIGHTS
from nbseg.io import atomic_write_text, sha256_file

BARS = {"saliency_iou_dino60": ("saliency IoU (head mean, 60% mass)", ">= 0.45"),
        "kmeans_dataset_miou": ("dataset k-means mIoU, full labels (K=13)", ">= random init + 0.15"),
        "linear_probe_pixel_acc": ("linear probe pixel accuracy, full labels", ">= 0.85")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("quality_json")
    p.add_argument("--notes", default=None, help="markdown appended to the card (what was tried, what would help)")
    p.add_argument("--command", default="nbseg pretrain runs/embedded_dino --config nbseg/configs/pretrain_embedded.yaml")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    prov = json.loads((run / "provenance.json").read_text())
    rows = list(csv.DictReader(open(run / "log.csv")))
    last = rows[-1]
    q = json.loads(Path(args.quality_json).read_text())
    trained, rand = q["results"]["trained"], q["results"]["random_init"]
    env = prov["environment"]
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lines = [
        "# The embedded backbone: nbseg ViT-Tiny/8 (DINO on the synthetic world)",
        "",
        "**Not a paper's model.** A 2.7M-parameter ViT (192-d, 6 blocks, 6 heads, patch 8) pretrained by nbseg with "
        "DINO on the embedded world's train split, so that notebooks show trained self-supervised features offline. "
        "Its numbers describe the synthetic world only.",
        "",
        f"- file: `nbseg/assets/{EMBEDDED_WEIGHTS.name}` (teacher backbone, fp16), sha256 `{sha256_file(EMBEDDED_WEIGHTS)}`",
        "- architecture: `nbseg_vit_tiny_patch8` (timm VisionTransformer); load with `nbseg.backbones.load('embedded')`",
        f"- command: `{args.command}` (config: `nbseg/configs/pretrain_embedded.yaml`)",
        f"- seed: {prov['seed']}; git revision at start: `{prov['git_revision']}`",
        f"- steps: {last['step']} (epoch {int(last['epoch']) + 1} of {cfg['epochs']}), final DINO loss {float(last['loss']):.3f}",
        f"- wall time: {float(last['seconds']) / 60:.0f} min on {env['cpu_count']} CPU cores ({env['platform']}, "
        f"torch {env['torch']}), shared with other work during the run",
        "",
        "## Quality on the world's val split (`python benchmarks/embedded_quality.py`)",
        "",
        "| measure | embedded | same architecture, random init | bar |",
        "|---|---|---|---|",
    ]
    for key, (name, bar) in BARS.items():
        lines.append(f"| {name} | {trained[key]:.3f} | {rand[key]:.3f} | {bar} |")
    for key, name in (("saliency_iou_alignseg60", "saliency IoU, AlignSeg variant (blur + small-component removal)"),
                      ("kmeans_dataset_pixel_acc", "dataset k-means pixel accuracy"),
                      ("linear_probe_miou", "linear probe mIoU")):
        lines.append(f"| {name} | {trained[key]:.3f} | {rand[key]:.3f} | |")
    lines += ["", f"Measured on {q['dataset']}; linear probe trained on {trained['n_train_probe']} train images "
              f"(logistic regression on frozen, standardised patch tokens, logits upsampled bilinearly).", ""]
    if args.notes:
        lines += [Path(args.notes).read_text().rstrip(), ""]
    atomic_write_text(EMBEDDED_WEIGHTS.parent / "EMBEDDED_MODEL_CARD.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
