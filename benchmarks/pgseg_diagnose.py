"""Why do PGSeg's zero-shot rows sit near chance on the world? Checks of a trained run's zero-shot path.

    python benchmarks/pgseg_diagnose.py RUN_DIR [RUN_DIR ...] [--images 64] [--json OUT.json]

For each finished run (``benchmarks/pgseg.py`` folders), on the first ``--images`` val images:

* learning at all: image -> caption top-1 among the val captions of 32 images at a time (chance 1/32), and the
  mean / max cosine between the 13 class prompts' text embeddings (near 1: the text encoder cannot tell the names
  apart, so the group -> class step is noise);
* grouping: the mean largest probability of the *soft* assignments of stage 1 and 2 (against uniform 1/G), the
  stage-2 groups owning pixels per image and the largest one's pixel share
  (:func:`nbseg.methods.pgseg.zeroshot.group_usage`) for the soft product the paper infers with
  (``A_1 A_2``) and for the hard chain (argmax of stage 1, then of stage 2);
* prompts: full-label mIoU (identity mapping) with the caption template "a picture of a {}", "a {}", "{}", the
  paper's "a photo of a {}." ("photo" is not a caption word: it is read as <unk>), and with each class embedded
  as the mean over its synonyms (the captions use every synonym, the canonical name only some of the time).

The background threshold is not involved (full labels have no background). Numbers describe a tiny GroupViT
trained from scratch on the world's captions, never the paper's.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from _report import emit


def diagnose(run: str | Path, n_images: int) -> dict:
    from nbseg.methods.pgseg.evaluation import _batches, open_split
    from nbseg.methods.pgseg.losses import clamped_scale
    from nbseg.methods.pgseg.text import captions_for
    from nbseg.methods.pgseg.zeroshot import (CAPTION_TEMPLATE, PAPER_TEMPLATE, final_assignment,
                                              group_class_affinity, group_usage, identity_scores,
                                              labels_with_background, pixel_groups)
    from nbseg.methods.workflow import load_trained
    from nbseg.world import SYNONYMS

    _, model, cfg, _ = load_trained(run)
    data = open_split(cfg, "val", "full")
    names, n = data.class_names, min(n_images, len(data))
    encode = lambda texts: F.normalize(model.text_encoder.encode_texts(texts), dim=-1)   # noqa: E731
    prompts = {t: encode([t.format(name) for name in names]) for t in (CAPTION_TEMPLATE, "a {}", "{}",
                                                                         PAPER_TEMPLATE)}
    prompts["synonym mean"] = F.normalize(torch.stack(
        [encode([CAPTION_TEMPLATE.format(s) for s in SYNONYMS[name]]).mean(0) for name in names]), dim=-1)
    cos = prompts[CAPTION_TEMPLATE] @ prompts[CAPTION_TEMPLATE].t()
    off_diagonal = cos[~torch.eye(len(names), dtype=torch.bool)]
    scale = clamped_scale(model.logit_scale)
    preds, gts, stats = {k: [] for k in prompts}, [], {k: [] for k in ("sharp1", "sharp2", "soft", "hard")}
    captions, hits = captions_for(data), 0
    for start, (images, labels) in zip(range(0, n, 32), _batches(data, n)):
        out = model.image_encoder.forward_features(images)
        soft1, soft2 = out.stages[0].grouped.soft, out.stages[1].grouped.soft                # (B, G1, N), (B, G2, G1)
        size = tuple(images.shape[-2:])
        groups = pixel_groups(final_assignment(soft1, soft2), out.grid, size)
        chain = torch.gather(soft2.argmax(1), 1, soft1.argmax(1))                           # (B, N) patch -> group
        for key, g in (("soft", groups), ("hard", chain.reshape(len(images), *out.grid))):
            stats[key].append(torch.stack(group_usage(g, soft2.shape[1])).float())
        stats["sharp1"].append(soft1.max(1).values.mean(1))
        stats["sharp2"].append(soft2.max(1).values.mean(1))
        group_emb = model.image_encoder.group_embeddings(out.tokens)
        for key, text in prompts.items():
            preds[key].append(labels_with_background(groups, group_class_affinity(group_emb, text, scale), None))
        gts.append(torch.stack(labels))
        image = F.normalize(model.image_encoder.image_embedding(out.tokens), dim=-1)
        text = encode([captions[data.ids[i]][0] for i in range(start, start + len(images))])
        hits += int(((image @ text.t()).argmax(1) == torch.arange(len(images))).sum())
    usage = {k: torch.cat(stats[k], 1).mean(1).tolist() for k in ("soft", "hard")}
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    return {
        "run": str(run), "steps": metrics.get("steps"), "images": n, "logit scale": float(scale),
        "val image->caption top-1 (32 at a time; chance 0.031)": hits / n,
        "prompt cosine mean / max (13 names)": [float(off_diagonal.mean()), float(off_diagonal.max())],
        "soft max prob stage 1 / stage 2": [float(torch.cat(stats["sharp1"]).mean()),
                                            float(torch.cat(stats["sharp2"]).mean())],
        "uniform 1/G stage 1 / stage 2": [1 / soft1.shape[1], 1 / soft2.shape[1]],
        "groups per image, largest share (soft A1 A2)": usage["soft"],
        "groups per image, largest share (hard chain)": usage["hard"],
        "full mIoU % by prompt": {k: 100 * identity_scores(p, gts, names).miou for k, p in preds.items()},
        "words read as <unk>": model.text_encoder.tokenizer.unknown([PAPER_TEMPLATE.format(x) for x in names]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished PGSeg run folders")
    p.add_argument("--images", type=int, default=64, help="val images (default 64)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    warnings.filterwarnings("ignore", message="prompt word")        # "photo": reported as "words read as <unk>"
    report = {"what": "PGSeg zero-shot path checks (tiny GroupViT from scratch on the world's captions; not the "
                      "paper's numbers)", "runs": [diagnose(run, args.images) for run in args.runs]}
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
