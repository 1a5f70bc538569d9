"""Why TransFGU's pseudo labels are weak on the world (issue #16): the pseudo-label error split into its stages.

    python benchmarks/transfgu_diagnose.py [--labels full] [--seed 0] [--out DIR] [--fit] [key=value ...]

On world/val with the default backbone (embedded: weakly supervised by captions, not DINO) and the Table-3 CPU
budget of ``benchmarks/transfgu.py`` (same crop bank, concepts and cache), for one label set and seed:

1. **Concepts**: purity / NMI of the thing bank's and the stuff bank's crop concepts against each crop's majority
   class, and the share of each bank's crops whose majority class is of the bank's kind.
2. **Response maps -> labels** (Eq. 6), each scored dataset-level Hungarian and many-to-one (the oracle that gives
   every concept its best class), mIoU (TransFGU's / STEGO's averaging) and pixel accuracy:
   (a) Grad-CAM as implemented, ``official`` and ``paper`` variants, and the parts of the official map (its
   gradient term alone, the signed gradient); (b) the cosine of each patch token to each concept centroid (no
   Grad-CAM); dataset k-means on the patch tokens (the bottom-up reference). For each: the share of patches whose
   argmax is a tie (decided by concept order), the thing / stuff confusions, and the Hungarian mIoU when the
   thing / stuff split is taken from the truth (oracle).
3. (c) **The foreground split alone**: the CLS-attention foreground (> mean, the crop bank's rule) against thing
   pixels.
4. ``--fit``: one round of the student (the budget's first round) and its agreement with its own training targets
   on the *training* images (full images and the augmented crops it was trained on) and on val.

Writes ``OUT/diagnose_<labels>_seed<seed>.json`` / ``.md``. Numbers are embedded-backbone numbers on a synthetic
world, never the paper's.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from _report import emit
from nbseg.methods.transfgu.table3 import CPU_BUDGET as BUDGET, CPU_VAL_LIMIT as VAL_LIMIT

REPO = Path(__file__).resolve().parents[1]


def response_maps(backbone, tokens, centroids, patches, n_things, foreground, chunk: int = 20) -> dict:
    """Every candidate response map (N, K, h, w) of the val images, keyed by its row name."""
    import torch

    from nbseg.methods.transfgu.gradcam import attention_gradients, concept_maps
    from nbseg.methods.transfgu.bank import keep_group, split_cosine_maps
    from nbseg.prototype_scores import prototype_cosine_maps

    grid = tuple(patches.shape[1:3])
    out = {k: [] for k in ("gradcam_official", "gradcam_paper", "official_gradient_term", "official_signed_gradient")}
    for i in range(0, len(tokens), chunk):
        t = tokens[i:i + chunk]
        for variant in ("official", "paper"):
            g, row = attention_gradients(backbone, t, centroids, variant, "jacobian")
            out[f"gradcam_{variant}"].append(concept_maps(g, row, grid, variant, backbone.num_prefix_tokens))
            if variant == "official":
                neg = -g[..., backbone.num_prefix_tokens:].mean(2).reshape(*g.shape[:2], *grid)
                out["official_gradient_term"].append(neg.clamp_min(0))
                out["official_signed_gradient"].append(neg)
    maps = {k: torch.cat(v) for k, v in out.items()}
    if n_things:              # the crop bank's foreground split applied to the maps (pseudo_maps: cosine's rule)
        official = maps["gradcam_official"]
        maps["gradcam_official_attention_split"] = keep_group(official, n_things, foreground, -1.0)
    maps["patch_concept_cosine"] = prototype_cosine_maps(patches, centroids)
    if n_things:
        maps["patch_concept_cosine_attention_split (pseudo_maps=cosine)"] = split_cosine_maps(
            patches, centroids, n_things, foreground)
    return maps


def score_maps(name, maps, cfg, gts, n_things, fg_only, is_thing, n_classes) -> dict:
    from nbseg.methods.transfgu import diagnose as D
    from nbseg.methods.transfgu import evaluation as E

    preds = E.pseudo_label_segmentation(maps, fg_only, cfg.background_threshold, cfg.image_size)
    k = maps.shape[1] + int(fg_only)
    row = {"maps": name, "K": k, "tie_share": D.tie_share(maps)}
    for protocol in ("hungarian", "many-to-one"):
        s = E.score(preds, gts, k, n_classes, protocol)
        row.update({f"{protocol}_miou": s["miou"], f"{protocol}_pixel_acc": s["pixel_acc"]})
    if not fg_only and n_things:
        row.update(D.group_errors(preds, n_things, gts, is_thing))
        truth = is_thing[gts.clamp(0, len(is_thing) - 1)]
        oracle = D.argmax_within_group(maps, n_things, truth)
        row["truth_split_hungarian_miou"] = E.score(oracle, gts, k, n_classes)["miou"]
    return row


def student_agreement(cfg, backbone, model, prepared, n_batches: int = 6) -> dict:
    """Share of patches where the student's argmax equals its training target's (Eq. 6 of the stored pseudo
    labels): on the full training images at ``image_size`` and on augmented crops drawn as in training."""
    import torch

    from nbseg.methods.transfgu import evaluation as E
    from nbseg.methods.transfgu.data import PseudoLabelCrops, open_split

    patches = E.val_patches(cfg, backbone, split=cfg.split, limit=cfg.train_limit, progress=False)
    target = model.targets(prepared.pseudo.tensor()).argmax(1)
    student = model.scores_from_features(patches).argmax(1)
    crops = PseudoLabelCrops(open_split(cfg), prepared.pseudo, cfg, backbone.patch_size)
    hits, total = 0, 0
    for b in range(n_batches):
        items = [crops[(i, 10_000 + b)] for i in range(b * 16 % len(crops), b * 16 % len(crops) + 16)]
        images = torch.stack([it["image"] for it in items])
        t = model.targets(torch.stack([it["pseudo"] for it in items])).argmax(1)
        s = model.scores_from_features(model.patches_of(images, cfg.crop_px)).argmax(1)
        hits, total = hits + int((s == t).sum()), total + t.numel()
    return {"train_full_image_agreement": float((student == target).float().mean()),
            "train_crop_agreement": hits / total,
            "train_target_classes_used": int(target.unique().numel()),
            "train_student_classes_used": int(student.unique().numel())}


def markdown(r: dict) -> str:
    s = r["setting"]
    lines = [f"# Why TransFGU's pseudo labels are weak ({s['labels']} labels, seed {s['seed']})", "",
             f"Backbone: {s['backbone']}. world/val, {s['val_images']} images at {s['image_size']} px; concepts from "
             f"{s['bank_images']} training images. Embedded-backbone numbers on a synthetic world, never the "
             "paper's.", "", "## Concepts (crop bank, against each crop's majority class)", "",
             "| bank | crops | purity | NMI | crops of the bank's kind |", "|---|---|---|---|---|"]
    for bank, q in r["concepts"].items():
        lines.append(f"| {bank} | {q['n_crops']} | {q['purity']:.3f} | {q['nmi']:.3f} | {q['right_kind']:.3f} |")
    lines += ["", "## Response maps -> labels (mIoU / pixel accuracy %)", "",
              "| maps | Hungarian mIoU | acc | many-to-one mIoU | acc | ties | thing->stuff | stuff->thing | "
              "truth-split Hungarian mIoU |", "|---|---|---|---|---|---|---|---|---|"]
    for m in r["maps"]:
        cells = [f"{100 * m.get(k, float('nan')):.2f}" for k in
                 ("hungarian_miou", "hungarian_pixel_acc", "many-to-one_miou", "many-to-one_pixel_acc", "tie_share",
                  "thing_as_stuff", "stuff_as_thing", "truth_split_hungarian_miou")]
        lines.append(f"| {m['maps']} | " + " | ".join(cells) + " |")
    f = r["foreground_split"]
    lines += ["", f"CLS-attention foreground (> mean) against thing pixels: thing pixels called background "
                  f"{100 * f['thing_as_stuff']:.1f} %, stuff pixels called foreground {100 * f['stuff_as_thing']:.1f}"
                  f" %, split accuracy {100 * f['group_acc']:.1f} % (things are {100 * f['thing_pixels']:.1f} % of "
                  "the pixels)."]
    if "student" in r:
        st = r["student"]
        lines += ["", "## The student after one round", "",
                  f"- agreement with its training targets on the training images: full images "
                  f"{100 * st['train_full_image_agreement']:.1f} %, augmented crops {100 * st['train_crop_agreement']:.1f}"
                  f" % (classes used: targets {st['train_target_classes_used']}, student "
                  f"{st['train_student_classes_used']})",
                  f"- val: student {100 * st['val_miou']:.2f} mIoU / {100 * st['val_pixel_acc']:.2f} acc"]
    return "\n".join(lines + ["", f"Total time {r['seconds']:.0f} s."]) + "\n"


def main(argv=None) -> int:
    import torch

    from nbseg.backbones import load
    from nbseg.config import parse_overrides
    from nbseg.io import atomic_write_text
    from nbseg.methods import get_method
    from nbseg.methods.transfgu import bank as B
    from nbseg.methods.transfgu import diagnose as D
    from nbseg.methods.transfgu import evaluation as E
    from nbseg.methods.transfgu.data import open_split
    from nbseg.methods.transfgu.gradcam import last_block_inputs
    from nbseg.methods.transfgu.table3 import TokenMemo
    from nbseg.methods.workflow import load_method_config, train_method
    from nbseg.evaluation.baselines import dataset_kmeans_over_seeds
    from nbseg.saliency import mean_threshold_saliency
    from nbseg.world.classes import THING_CLASSES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="embedded", help="backbone name (default: the embedded one)")
    p.add_argument("--labels", default="full", choices=["coarse", "voc", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-limit", type=int, default=VAL_LIMIT)
    p.add_argument("--out", default=str(REPO / "artifacts" / "bench" / "transfgu_diagnose"))
    p.add_argument("--cache", default=str(REPO / "artifacts" / "bench" / "transfgu" / "cache"),
                   help="stage cache (default: the Table-3 benchmark's; stages are keyed, sharing is safe)")
    p.add_argument("--fit", action="store_true", help="also train one round and measure its fit on train")
    p.add_argument("overrides", nargs="*", help="TransFGUConfig key=value overrides (after the budget)")
    args = p.parse_args(argv)
    out = Path(args.out)
    stem = (f"diagnose_{args.labels}_seed{args.seed}" + ("_fit" if args.fit else "")
            + ("_" + "_".join(args.overrides) if args.overrides else ""))
    cfg = load_method_config(get_method("transfgu"), "world",
                             {**BUDGET, "backbone": args.backbone, "cache_root": args.cache, "labels": args.labels,
                              "seed": args.seed, "kmeans_seed": args.seed, **parse_overrides(args.overrides)})
    backbone = load(cfg.backbone, cfg.weights)
    t0 = time.perf_counter()
    n_things, _, fg_only = cfg.class_split()
    val_data = open_split(cfg, cfg.eval_split)
    n_classes = len(val_data.class_names)
    # the world's thing flags (classes.json): the full set's things, the coarse set's "object", VOC's non-background
    is_thing = torch.tensor([c in THING_CLASSES or c == "object" for c in val_data.class_names])
    gts = E.eval_labels(cfg, limit=args.val_limit)

    train = E.prepare(cfg, backbone, progress=False, tokens_of=TokenMemo(cfg, backbone, cfg.split))
    labels = B.load_labels(open_split(cfg), train.bank.cls.shape[0], train.bank.size)
    majority = B.crop_majority_classes(labels, train.bank.windows, n_classes)
    concepts = D.group_concept_quality(train.concepts.crop_labels(train.bank), train.concepts.groups, majority,
                                       is_thing)

    images = B.load_images(val_data, 0, len(gts), cfg.image_size)
    tokens = last_block_inputs(backbone, images)
    patches = E.val_patches(cfg, backbone, limit=len(gts), progress=False)
    fg = mean_threshold_saliency(backbone.extract(images).attn)
    maps = response_maps(backbone, tokens, train.concepts.centroids, patches, n_things, fg)
    rows = [score_maps(name, m, cfg, gts, n_things, fg_only, is_thing, n_classes) for name, m in maps.items()]
    km = dataset_kmeans_over_seeds(patches, list(gts), n_classes, [args.seed])
    rows.append({"maps": "patch k-means (bottom-up reference)", "K": n_classes,
                 "hungarian_miou": km["miou_stego_mean"], "hungarian_pixel_acc": km["pixel_acc_mean"]})
    report = {"setting": {"backbone": backbone.describe(), "labels": args.labels, "seed": args.seed,
                          "val_images": len(gts), "image_size": cfg.image_size, "bank_images": int(train.bank.cls.shape[0]),
                          "variant_trained": cfg.variant, "budget": BUDGET, "overrides": args.overrides},
              "concepts": concepts, "maps": rows, "foreground_split": D.foreground_split(fg, gts, is_thing)}
    if args.fit:
        one = dataclasses.replace(cfg, epochs=cfg.bootstrap_start)            # the first round only
        model, _ = train_method(get_method("transfgu"), one, out / "runs" / f"{stem}_round1", progress=False,
                                backbone=backbone)
        val = E.score(E.student_segmentation(model, patches), gts, cfg.n_classes, n_classes)
        report["student"] = {**student_agreement(one, backbone, model, train), "val_miou": val["miou"],
                             "val_pixel_acc": val["pixel_acc"]}
    report["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    emit(report, str(out / f"{stem}.json"))
    atomic_write_text(out / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
