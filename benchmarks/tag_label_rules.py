"""How good are the patch labels a caption-tag net's patch head gives, under each labelling rule? (The diagnosis
behind stage 4 of the default backbone: ``nbseg/pretrain/tag_teacher.py`` and the model card's notes.)

    python benchmarks/tag_label_rules.py NET.pt [NET2.pt ...] [--json OUT]

NET.pt is the state dict of a whole :class:`nbseg.pretrain.caption_tags.CaptionTagNet` (ViT and tag heads; e.g.
``torch.save(load_checkpoint(RUN)['trainable'], NET.pt)``; an exported backbone has no heads and is refused). On the
default world's val split (tags from its captions, never its pixel labels) each rule labels every patch with one of
the image's tagged classes; the result is scored against each patch's majority class (full labels):

* ``raw``: arg-max of the raw patch scores over the tags (stage 3's self-training rule);
* ``thing_first``: the best tagged thing where its sigmoid exceeds 0.5, else the best tagged stuff class;
* ``standardised``: arg-max over the tags of the per-class standardised scores (stage 4's teacher rule).

Reported per rule: patch accuracy, the mean per-image IoU of the patches called a thing with the true thing
patches, and the share of patches called a thing (the truth's share alongside).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nbseg.data import load_dataset
from nbseg.data.world import read_class_table
from nbseg.probes.basics import patch_labels
from nbseg.pretrain.caption_tags import CaptionTagNet, read_captions, tag_patterns, tags_from_captions, warm_start
from nbseg.pretrain.tag_teacher import standardise_per_class, tagged_labels
from nbseg.world import SYNONYMS, ensure_world


def label_rules(scores: torch.Tensor, tags: torch.Tensor, is_thing: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, C, h, w) patch scores, (N, C) tags, (C,) bool -> {rule: (N, h, w) labels} (module docstring)."""
    untagged = (tags <= 0)[:, :, None, None]
    raw = scores.masked_fill(untagged, float("-inf")).argmax(1)
    thing = is_thing[None, :, None, None]
    best_thing_p, best_thing = torch.sigmoid(scores).masked_fill(untagged | ~thing, 0).max(1)
    best_stuff = scores.masked_fill(untagged | thing, float("-inf")).argmax(1)
    no_stuff = (tags[:, ~is_thing].sum(1) == 0)[:, None, None]
    thing_first = torch.where((best_thing_p > 0.5) | no_stuff, best_thing, best_stuff)
    standardised, _ = tagged_labels(standardise_per_class(scores), tags)
    return {"raw": raw, "thing_first": thing_first, "standardised": standardised}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("nets", nargs="+", help="whole-net state dicts (ViT + tag heads)")
    p.add_argument("--arch", default="nbseg_vit_tiny_convstem_patch8")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    root = Path(ensure_world())
    table = read_class_table(root)["full"]
    names, is_thing = table["names"], torch.tensor(table["is_thing"]).bool()
    val = load_dataset("world", split="val", labels="full")
    captions, patterns = read_captions(root / "captions.jsonl"), tag_patterns(SYNONYMS, names)
    images = torch.stack([val[i].image for i in range(len(val))])
    tags = torch.stack([tags_from_captions(captions[i], patterns) for i in val.ids])
    out = {}
    for path in args.nets:
        net = CaptionTagNet(args.arch, len(names), is_thing, drop_path_rate=0.0, r=4.0)
        warm_start(net, path)
        net.eval()
        with torch.no_grad():
            scores = torch.cat([net(images[b:b + 50])[1] for b in range(0, len(images), 50)])    # (N, P, C)
        h = int(round(scores.shape[1] ** 0.5))
        scores = scores.transpose(1, 2).reshape(len(images), len(names), h, h)
        truth = patch_labels(torch.stack([val[i].label for i in range(len(val))]), (h, h), len(names))
        valid = truth != 255
        true_thing = is_thing[truth.clamp(max=len(names) - 1)] & valid
        rows = {}
        for rule, labels in label_rules(scores, tags, is_thing).items():
            called = is_thing[labels.clamp_min(0)] & (labels >= 0)
            iou = (called & true_thing).flatten(1).sum(1) / (called | true_thing).flatten(1).sum(1).clamp_min(1)
            rows[rule] = {"patch_acc": ((labels == truth) & valid).sum().item() / valid.sum().item(),
                          "thing_iou": iou.mean().item(), "thing_share": called.float().mean().item()}
            print(f"{path}: {rule:13s} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[rule].items()))
        rows["truth_thing_share"] = true_thing.float().mean().item()
        out[path] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
