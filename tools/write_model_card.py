"""Write nbseg/assets/EMBEDDED_MODEL_CARD.md: the two shipped backbones, their quality beside random init and raw
colour with the bars, and the learning curves of the runs behind them.

    python tools/write_model_card.py --tags-run RUN_DIR --render 192 --quality QUALITY.json --ssl-quality SSL.json \
        [--curve NAME=CSV ...] [--baselines CURVE_BASELINES.json] [--notes NOTES.md]

QUALITY.json / SSL.json: `benchmarks/embedded_quality.py --json` for the default and the self-supervised backbone.
Each --curve is a learning curve (a caption-tag run's metrics.csv or tools/pretrain_curve.py's quality_curve.csv).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

from nbseg.backbones import EMBEDDED, EMBEDDED_SSL_WEIGHTS, EMBEDDED_WEIGHTS
from nbseg.io import atomic_write_text, sha256_file
from nbseg.world import PROBE_SIZE

MEASURES = [("saliency_iou_dino60", "saliency IoU (head-mean CLS attention, 60% mass)", ">= 0.45"),
            ("linear_probe_pixel_acc", "linear probe pixel accuracy, full labels", ">= 0.80 and >= random + 0.15"),
            ("kmeans_dataset_miou", "dataset k-means mIoU, full labels (K = 13)",
             ">= random + 0.12 and >= raw colour + 0.12"),
            ("saliency_iou_alignseg60", "saliency IoU, AlignSeg variant", ""),
            ("linear_probe_miou", "linear probe mIoU", ""),
            ("kmeans_dataset_pixel_acc", "dataset k-means pixel accuracy", ""),
            ("per_image_intra_deg", "intra-class angle per image (deg)", "per image tighter than dataset"),
            ("dataset_intra_deg", "intra-class angle over the dataset (deg)", ""),
            ("per_image_inter_deg", "inter-class angle per image (deg)", ""),
            ("dataset_inter_deg", "inter-class angle over the dataset (deg)", "")]
CURVE_COLUMNS = [("saliency_iou_dino60", "saliency"), ("kmeans_dataset_miou", "k-means mIoU"),
                 ("linear_probe_pixel_acc", "probe acc"), ("linear_probe_miou", "probe mIoU"),
                 # DCN's angles, per image / over the dataset (curves from 2026-11-29 on; blank before)
                 ("per_image_inter_deg", "inter per image"), ("dataset_inter_deg", "inter dataset"),
                 ("per_image_intra_deg", "intra per image"), ("dataset_intra_deg", "intra dataset")]


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (f"{v:.1f}" if isinstance(v, float) else str(v))


def curve_table(name: str, path: Path, log: Path | None = None) -> list[str]:
    rows = list(csv.DictReader(open(path)))
    logged = []   # (step, training seconds) from the run's log: the curve point takes the last row at or before it
    if log is not None and log.exists():
        logged = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(open(log))]
    lines = [f"**{name}** (`{path}`)", "", "| step | CPU minutes | " + " | ".join(c for _, c in CURVE_COLUMNS) + " |",
             "|---:|---:|" + "---:|" * len(CURVE_COLUMNS)]
    for r in rows:
        if logged:
            before = [sec for st, sec in logged if st <= int(r["step"])]
            minutes = f"{before[-1] / 60:.0f}" if before else ""
        else:   # tools/pretrain_curve.py writes the run's training seconds into the curve itself
            minutes = f"{float(r['seconds']) / 60:.0f}" if r.get("seconds") else ""
        lines.append(f"| {r['step']} | {minutes} | " + " | ".join(_fmt(float(r[k])) if r.get(k) else "" for k, _ in
                                                               CURVE_COLUMNS) + " |")
    return lines + [""]


def stage_terms(cfg: dict) -> str:
    """The loss terms a caption-tag run's config switches on, in the module docstring's words."""
    terms = ["CLS thing-tag and pooled patch-tag losses"]
    if float(cfg.get("teacher_momentum") or 0) > 0:      # stage 4: nbseg/pretrain/tag_teacher.py
        return " + ".join(terms + [
            f"an EMA teacher (`teacher_momentum={cfg['teacher_momentum']}`) labels the student's crops from the "
            f"whole image (per-class standardised scores, `teacher_keep_fraction={cfg['teacher_keep_fraction']}` of "
            f"each class kept; `self_training_weight={cfg['self_training_weight']}`) and gives the attention its "
            f"thing-map target (`attention_target_smoothing={cfg['attention_target_smoothing']}`); "
            "`nbseg/pretrain/tag_teacher.py`"] + (
            [f"the within-image class separation term (`separation_weight={cfg['separation_weight']}`, T = "
             f"{cfg.get('separation_temperature')})"] if float(cfg.get("separation_weight") or 0) > 0 else []))
    for key, name in (("mil_weight", "attention MIL"), ("attention_weight", "attention from the thing map"),
                      ("self_training_weight", "patch self-training")):
        if float(cfg.get(key) or 0) > 0:
            extra = (f", threshold {cfg.get('self_training_threshold')}" if key == "self_training_weight" else "")
            terms.append(f"{name} (`{key}={cfg[key]}`{extra})")
    return " + ".join(terms)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tags-run", required=True)
    p.add_argument("--warm-start-run", action="append", default=[],
                   help="an earlier stage that --tags-run (or the next --warm-start-run) started from; repeat, "
                        "first stage first")
    p.add_argument("--quality", required=True)
    p.add_argument("--ssl-quality", required=True)
    p.add_argument("--render", type=int, required=True,
                   help="the world render (px) --quality and --ssl-quality were measured on (192: the probe render)")
    p.add_argument("--train-render-quality", nargs=2, metavar=("EMBEDDED.json", "SSL.json"), default=None,
                   help="the same benchmark on the world's 96-px training render (`--world-size 96`), for a "
                        "second table")
    p.add_argument("--curve", action="append", default=[], help="NAME=CSV[:LOG.csv] (a learning curve)")
    p.add_argument("--baselines", default=None, help="curve-probe values of the random-init baselines (JSON)")
    p.add_argument("--notes", default=None, help="markdown appended to the card")
    p.add_argument("--command", default="nbseg pretrain-tags runs/embedded_tags data_root=data/world_pretrain "
                                         "arch=nbseg_vit_tiny_convstem_patch8")
    args = p.parse_args(argv)
    run = Path(args.tags_run)
    prov = json.loads((run / "provenance.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    log = list(csv.DictReader(open(run / "log.csv")))
    q = json.loads(Path(args.quality).read_text())
    ssl = json.loads(Path(args.ssl_quality).read_text())
    trained, rand = q["results"]["trained"], q["results"]["random_init"]
    ssl_trained, ssl_rand = ssl["results"]["trained"], ssl["results"]["random_init"]
    env = q["machine"]
    lines = [
        "# The embedded backbones: nbseg's ViT-Tiny/8 on the synthetic world (v2)",
        "",
        "**Not a paper's model, and the default is not DINO.** Two small ViTs trained by nbseg on the embedded world's "
        "train split ship with the package, so that every notebook runs offline on features that show what DINO's "
        "show on real images (attention on objects, patch tokens that group by class). Their numbers describe the "
        "synthetic world only.",
        "",
        f"- `embedded` (default): **{EMBEDDED['embedded'][2]}**. `nbseg/assets/{EMBEDDED_WEIGHTS.name}` (fp16), "
        f"sha256 `{sha256_file(EMBEDDED_WEIGHTS)}`; architecture `{cfg['arch']}` (timm VisionTransformer, 192-d, "
        "6 blocks, 6 heads, patch 8, with a convolutional patch embedding: `nbseg.backbones.ConvStemPatchEmbed`).",
    ]
    if args.warm_start_run:
        stages = [Path(r) for r in args.warm_start_run] + [run]
        lines += [f"  - trained in {len(stages)} stages, all `nbseg pretrain-tags` on the same data (objective and why: "
                  "`nbseg/pretrain/caption_tags.py`; image-level tags read from the caption nouns, the pixel labels "
                  "are never read); each stage after the first warm-starts from the previous one's ViT and tag heads "
                  "(`init_weights`: the previous run folder's final checkpoint); `sh tools/train_embedded.sh` runs "
                  "them all, resumably:"]
        steps = seconds = 0.0
        for i, stage in enumerate(stages, 1):
            c = yaml.safe_load((stage / "config.yaml").read_text())
            last = list(csv.DictReader(open(stage / "log.csv")))[-1]
            steps, seconds = steps + int(last["step"]), seconds + float(last["seconds"])
            lines.append(f"    {i}. `{stage}`: {stage_terms(c)}; {last['step']} steps at batch {c['batch_size']} "
                         f"({c['epochs']} epochs, lr {c['lr']}), {float(last['seconds']) / 60:.0f} min, final loss "
                         f"{float(last['loss']):.3f};")
        lines.append(f"    total {int(steps)} steps, {seconds / 60:.0f} min on {env['cpu_count']} CPU cores "
                     f"({env['platform']}, torch {env['torch']}), sharing them with other work")
    else:
        lines += [
            f"  - command: `{args.command} epochs={cfg['epochs']} warmup_epochs={cfg['warmup_epochs']}`; objective "
            "and why: `nbseg/pretrain/caption_tags.py` (image-level tags read from the caption nouns; the pixel "
            "labels are never read).",
            f"  - steps: {log[-1]['step']} at batch {cfg['batch_size']} ({cfg['epochs']} epochs), final loss "
            f"{float(log[-1]['loss']):.3f}; {float(log[-1]['seconds']) / 60:.0f} min on {env['cpu_count']} CPU "
            f"cores ({env['platform']}, torch {env['torch']}), sharing them with other work",
        ]
    lines += [
        f"  - data: a 10 000-image world (`nbseg world data/world_pretrain --train 10000`; its val split is the "
        f"default world's), seed {prov['seed']}, git revision at start `{prov['git_revision']}`",
        f"- `embedded-ssl`: **{EMBEDDED['embedded-ssl'][2]}**. `nbseg/assets/{EMBEDDED_SSL_WEIGHTS.name}`, sha256 "
        f"`{sha256_file(EMBEDDED_SSL_WEIGHTS)}`; the best self-supervised backbone measured on world v2 (history "
        "below). Load it with `nbseg.backbones.load('embedded-ssl')` to set what self-supervision alone learns "
        "beside the default.",
        "",
        "## Quality on world v2's val split (`python benchmarks/embedded_quality.py [--backbone embedded-ssl]`)",
        "",
        (f"Measured on the world's **probe render** (`data/world_192px`: the world drawn at {PROBE_SIZE} px, 24 x 24 "
         "patches, objects 8-14 patches across; what the quickstart and the probe notebooks read), as DINO's "
         "features are looked at on ~500-px VOC images although DINO trained on 224-px crops."
         if args.render == PROBE_SIZE else f"Measured on the world drawn at {args.render} px.")
        + (" The training render follows." if args.train_render_quality else ""),
        "",
        f"{q['dataset']}; linear probe on {trained['n_train_probe']} train images (logistic regression on frozen, "
        f"standardised patch tokens); raw-colour k-means mIoU {q['raw_colour_kmeans']['miou']:.3f}. "
        "Random init = the same architecture, untrained (the conv-stem ViT for `embedded`, the plain ViT for "
        "`embedded-ssl`).",
        "",
        "| measure | embedded | random init | embedded-ssl | random init (plain ViT) | bar (default) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, name, bar in MEASURES:
        lines.append(f"| {name} | {_fmt(trained[key])} | {_fmt(rand[key])} | {_fmt(ssl_trained[key])} | "
                     f"{_fmt(ssl_rand[key])} | {bar} |")
    lines += ["", "Bars (issue: a world that features can learn from): "
              + "; ".join(f"{k}: {'met' if v else '**not met**'}" for k, v in q["bars"].items()), ""]
    if args.train_render_quality:
        q96, ssl96 = (json.loads(Path(f).read_text()) for f in args.train_render_quality)
        t96, r96 = q96["results"]["trained"], q96["results"]["random_init"]
        s96, sr96 = ssl96["results"]["trained"], ssl96["results"]["random_init"]
        lines += [f"The same on the world's **training render** (96 px, 12 x 12 patches; `--world-size 96`: what the "
                  f"backbones were trained on and every method's world config reads): {q96['dataset']}; raw-colour "
                  f"k-means mIoU {q96['raw_colour_kmeans']['miou']:.3f}.", "",
                  "| measure | embedded | random init | embedded-ssl | random init (plain ViT) |",
                  "|---|---:|---:|---:|---:|"]
        for key, name, _ in MEASURES:
            lines.append(f"| {name} | {_fmt(t96[key])} | {_fmt(r96[key])} | {_fmt(s96[key])} | {_fmt(sr96[key])} |")
        lines += ["", "Bars on the training render: "
                  + "; ".join(f"{k}: {'met' if v else '**not met**'}" for k, v in q96["bars"].items()), ""]
    lines += ["## Learning curves", "",
              "Quality measured during training on the first 100 val images of the 96-px training render (linear "
              "probe on 200 train images), so compare the values with the training render's table above.", ""]
    if args.baselines:
        base = json.loads(Path(args.baselines).read_text())
        lines += ["| reference (same 100 images) | " + " | ".join(c for _, c in CURVE_COLUMNS) + " |",
                  "|---|" + "---:|" * len(CURVE_COLUMNS)]
        for name, vals in base.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(vals[k]) if k in vals else "" for k, _ in CURVE_COLUMNS) + " |")
        lines.append("")
    for spec in args.curve:
        name, _, paths = spec.partition("=")
        csv_path, _, log_path = paths.partition(":")
        lines += curve_table(name, Path(csv_path), Path(log_path) if log_path else None)
    if args.notes:
        lines += [Path(args.notes).read_text().rstrip(), ""]
    atomic_write_text(EMBEDDED_WEIGHTS.parent / "EMBEDDED_MODEL_CARD.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
