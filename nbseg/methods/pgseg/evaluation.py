"""PGSeg's data and evaluation: the caption training set, and zero-shot segmentation of a labelled split by class
name (identity mapping: zero-shot needs no matching), with Hungarian as an unsupervised reference and the
"encoder tokens + k-means" baseline (:func:`nbseg.cluster.kmeans_segmentation`), the synonym test, and the
compactness / richness measures of the paper's Fig. 5-6.

Label sets of the world: ``full`` (13 named classes, no background: every pixel is a prompt's class) and ``voc``
(background + 8 things: the 8 thing names are prompted and a pixel is background under the threshold chosen on
``threshold_images`` *train* images, never on the evaluated split).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from nbseg.cluster import kmeans_segmentation
from nbseg.data import load_dataset
from nbseg.evaluation import evaluate as evaluate_clusters
from nbseg.methods.pgseg.text import CaptionPairs, captions_for
from nbseg.methods.pgseg.zeroshot import (choose_background_threshold, compactness, group_usage, identity_scores,
                                          labels_with_background, richness)
from nbseg.progress import tqdm
from nbseg.world import SYNONYMS, THING_CLASSES

BATCH = 32


def open_split(cfg, split: str, labels: str = "full"):
    """The dataset ``cfg.data`` / ``split`` (the world with label set ``labels``)."""
    extra = {"labels": labels} if cfg.data == "world" else {}
    return load_dataset(cfg.data, cfg.data_root, split, **extra)


def training_dataset(cfg, model, progress: bool = True) -> CaptionPairs:
    """(image, caption) pairs of the training split; fills the model's tokenizer from the captions (the
    checkpoint then carries it) and tells the model its steps per epoch (the NPR schedule)."""
    data = open_split(cfg, "train" if cfg.data == "world" else "all")
    captions = captions_for(data, cfg.captions_file)
    if cfg.train_limit:
        data.ids = data.ids[:cfg.train_limit]
        captions = {i: captions[i] for i in data.ids}
    model.text_encoder.tokenizer.fit([c for caps in captions.values() for c in caps])
    pairs = CaptionPairs(data, captions, model.text_encoder.tokenizer, size=cfg.image_size)
    model.steps_per_epoch = max(1, len(pairs) // cfg.batch_size)
    return pairs


def synonym_names(names: list[str]) -> list[str]:
    """Each class's first synonym that is not its name ("ball" -> "sphere"); the name when it has none."""
    return [next((s for s in SYNONYMS.get(n, []) if s != n), n) for n in names]


def _batches(dataset, n: int):
    for start in range(0, n, BATCH):
        samples = [dataset[i] for i in range(start, min(n, start + BATCH))]
        yield torch.stack([s.image for s in samples]), [s.label for s in samples]


@torch.no_grad()
def choose_threshold(model, *, images: int | None = None, progress: bool = False) -> tuple[float, dict]:
    """The background threshold for the ``voc`` labels (8 thing prompts), chosen on the first ``images``
    *train* images (default ``cfg.threshold_images``)."""
    cfg = model.cfg
    data = open_split(cfg, "train", "voc")
    n = min(images or cfg.threshold_images, len(data))
    groups, affinities, gts = [], [], []
    for images_, labels in tqdm(_batches(data, n), desc="bg threshold (train)", disable=not progress):
        g, a = model.zero_shot(images_, THING_CLASSES)
        groups.append(g), affinities.append(a), gts.append(torch.stack(labels))
    return choose_background_threshold(groups, affinities, gts, data.class_names)


@dataclass
class PGSegEvaluation:
    """Zero-shot scores of one model on one split: ``table`` (one row per setting), ``values`` (flat metrics)."""

    table: pd.DataFrame
    values: dict
    setting: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        return {**self.setting, **self.values}

    def report(self) -> str:
        head = (f"PGSeg ({self.setting.get('variant')} variant) zero-shot on {self.setting.get('dataset')}: "
                f"{self.setting.get('backbone_description')}. Numbers from a from-scratch encoder on the synthetic "
                "world, not the paper's.")
        return head + "\n" + self.table.to_string(index=False)


@torch.no_grad()
def evaluate_pgseg(model, *, split: str | None = None, limit: int | None = None, kmeans: bool = True,
                   progress: bool = True) -> PGSegEvaluation:
    """Zero-shot mIoU on ``split`` (default ``cfg.eval_split``; first ``limit`` images) for the full labels
    (canonical names and synonyms), the voc labels (background threshold from train), Hungarian on the same
    predictions, optional k-means on the encoder's patch tokens, compactness / richness of stage 1, and the
    stage-2 groups owning pixels per image with the largest one's share (a collapse check)."""
    model.eval()
    cfg = model.cfg
    split = split or cfg.eval_split
    full, voc = open_split(cfg, split, "full"), open_split(cfg, split, "voc")
    n = min(limit or len(full), len(full))
    threshold, _ = choose_threshold(model, progress=progress)
    names = full.class_names
    preds = {"full": [], "synonyms": [], "voc": []}
    gts_full, gts_voc, patches, compact, centres, usage = [], [], [], [], [], []
    for start, (images, labels) in zip(range(0, n, BATCH), tqdm(_batches(full, n), desc="zero-shot",
                                                                disable=not progress)):
        out = model.image_encoder.forward_features(images.to(model.device))
        size = tuple(images.shape[-2:])
        for key, prompts, bar in (("full", names, None), ("synonyms", synonym_names(names), None),
                                  ("voc", THING_CLASSES, threshold)):
            groups, affinity = model.groups_for(out, prompts, None, size)
            preds[key].append(labels_with_background(groups, affinity, bar).cpu())
        used, largest = group_usage(groups, affinity.shape[1])
        usage.append(torch.stack([used.float(), largest]).cpu())
        gts_full.append(torch.stack(labels))
        gts_voc.append(torch.stack([voc[i].label for i in range(start, start + len(labels))]))
        stage1 = out.stages[0].grouped
        compact.append(compactness(out.patch_tokens, stage1.soft).cpu())
        centres.append(stage1.centres.cpu())
        patches.append(out.patch_tokens.reshape(len(images), *out.grid, -1).cpu())
    rows = []

    def row(setting, result, protocol):
        rows.append({"setting": setting, "protocol": protocol, "miou %": 100 * result.miou,
                     "pixel acc %": 100 * result.pixel_acc, "classes": result.n_classes, "images": n})
        return result.miou

    voc_names = ["background", *THING_CLASSES]
    values = {
        "pgseg/full/miou": row("full labels, class names", identity_scores(preds["full"], gts_full, names),
                               "identity"),
        "pgseg/full/synonyms_miou": row("full labels, synonyms", identity_scores(preds["synonyms"], gts_full,
                                                                                  names), "identity"),
        "pgseg/voc/miou": row(f"voc labels, thing names, bg < {threshold:.2f} (train)",
                              identity_scores(preds["voc"], gts_voc, voc_names), "identity"),
        "pgseg/full/hungarian_miou": row("full labels, class names", evaluate_clusters(
            preds["full"], gts_full, len(names), len(names), class_names=names), "hungarian (reference)"),
        "pgseg/voc/bg_threshold": threshold,
        "pgseg/compactness": float(torch.cat(compact).mean()),
        "pgseg/richness": richness(torch.cat(centres)),
        # collapse check: stage-2 groups owning pixels per image (of groups_stage2), the largest one's pixel share
        "pgseg/groups_per_image": float(torch.cat(usage, 1)[0].mean()),
        "pgseg/largest_group_share": float(torch.cat(usage, 1)[1].mean()),
    }
    if kmeans:
        labels = kmeans_segmentation(torch.cat(patches), len(names), size=tuple(gts_full[0].shape[-2:]),
                                     seed=cfg.seed)
        values["kmeans/full/miou"] = row("encoder patch tokens + k-means", evaluate_clusters(
            list(labels), [g for b in gts_full for g in b], len(names), len(names), class_names=names),
            "hungarian")
    setting = {**model.provenance(), "dataset": f"{cfg.data}/{split}", "prompt_template": cfg.prompt_template,
               "n_images": n}
    table = pd.DataFrame(rows)
    table.insert(0, "variant", cfg.variant)
    table["encoder"] = "GroupViT from scratch"
    table["dataset"] = setting["dataset"]
    return PGSegEvaluation(table=table, values=values, setting=setting)


__all__ = ["training_dataset", "evaluate_pgseg", "choose_threshold", "synonym_names", "open_split",
           "PGSegEvaluation"]
