"""SAN's evaluation: Hungarian pixel accuracy (what the paper reports) and mIoU over a labelled split, once per way
of forming zeta at test time (fixed batch composition; running memory), on every label set of the data (the world:
coarse 3 groups = the COCO-Stuff-3 analogue, full 13 classes = the COCO-Stuff-27 analogue), with the collapse
diagnostics (:mod:`nbseg.evaluation.collapse`) and the pixel k-means baselines (raw RGB; SAN's own pixel encoder at
random init) at the same K.

Every row says "SAN trained from scratch, no pretrained model"; the paper's numbers (:mod:`nbseg.methods.san.paper`)
are labelled as the paper's wherever they are shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from nbseg.evaluation import evaluate
from nbseg.evaluation.collapse import collapse_diagnostics
from nbseg.evaluation.pixel_baselines import pixel_kmeans
from nbseg.methods.san.data import eval_view, open_split
from nbseg.methods.san.model import SAN, PixelEncoder, network_input
from nbseg.progress import tqdm

MODEL_LABEL = "SAN trained from scratch, no pretrained model"
RANK_SAMPLE = 4096          # pixel embeddings sampled (seeded) for the effective rank of Q
SEMANTICS_LABEL = {"batch": "zeta of fixed eval batches of {b} images (split order)",
                   "memory": "zeta from the running memory kept in training"}


def label_sets(cfg) -> list[str | None]:
    """The world is scored on its coarse and full labels; other data on their own labels (None)."""
    return ["coarse", "full"] if cfg.data == "world" else [None]


@dataclass
class EvalSplit:
    """The evaluation views of a split: images (3, H, W) and labels per label set, and the data's description."""

    images: list
    labels: dict
    class_counts: dict
    description: str
    ids: list = field(default_factory=list)


def load_eval_split(cfg, split: str | None = None, limit: int | None = None, progress: bool = False) -> EvalSplit:
    """The first ``limit`` images of ``split`` (default ``cfg.eval_split``) in their evaluation view, with labels."""
    split = split or cfg.eval_split
    images, labels, counts, description, ids = [], {}, {}, "", []
    for name in label_sets(cfg):
        data = open_split(cfg, split, labels=name)
        n = len(data) if limit is None else min(limit, len(data))
        key = name or data.name
        counts[key], labels[key] = data.num_classes, []
        description = f"{cfg.data}/{split}" + (f" ({n} images)" if n else "")
        for i in tqdm(range(n), desc=f"load {key}", disable=not progress):
            sample = data[i]
            image, label = eval_view(sample.image, sample.label, cfg)
            labels[key].append(label)
            if len(images) < n:
                images.append(image)
                ids.append(getattr(sample, "id", i))
    return EvalSplit(images, labels, counts, description, ids)


def _batches(images: list, size: int):
    for start in range(0, len(images), size):
        chunk = images[start:start + size]
        if len({tuple(im.shape) for im in chunk}) == 1:
            yield torch.stack(chunk)
        else:                                   # mixed sizes: one image per batch (zeta from that image)
            yield from (im[None] for im in chunk)


@torch.no_grad()
def predict_split(model: SAN, images: list, eval_semantics: str, batch_size: int | None = None) -> list:
    """SAN's segmentation of every image, (H, W) int64 each; batches of ``batch_size`` consecutive images
    (default ``cfg.eval_batch_size`` or ``batch_size``): their composition is fixed by the split order."""
    size = batch_size or model.cfg.eval_batch_size or model.cfg.batch_size
    return [p.cpu() for batch in _batches(images, size) for p in model.predict(batch, eval_semantics)]


@torch.no_grad()
def sample_embeddings(model: SAN, images: list, n: int = RANK_SAMPLE, seed: int = 0) -> torch.Tensor:
    """``n`` pixel-wise embeddings Q (n, P), drawn uniformly (seeded) over the split's pixels."""
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, n // max(1, len(images)))
    rows = []
    for batch in _batches(images, 16):
        for q in model.pixel_embeddings(batch).cpu():
            flat = q.flatten(1).T
            rows.append(flat[torch.randint(0, flat.shape[0], (per_image,), generator=generator)])
    return torch.cat(rows)[:n]


def score(preds: list, split: EvalSplit, k: int) -> dict:
    """Hungarian mIoU and pixel accuracy on every label set: ``{label set: (miou, pixel_acc)}``."""
    out = {}
    for name, gts in split.labels.items():
        r = evaluate(preds, gts, k, split.class_counts[name], protocol="hungarian")
        out[name] = (r.miou, r.pixel_acc)
    return out


def random_encoder(cfg) -> PixelEncoder:
    """SAN's pixel encoder at initialisation (seeded as the model is; BN in eval mode: identity statistics)."""
    model = SAN(cfg)
    return model.encoder.eval()


@dataclass
class SANEvaluation:
    """SAN on a labelled split: ``table`` (one row per (method, test-time semantics, label set)), the collapse
    diagnostics per row, and ``preds`` (the default test-time semantics' segmentations) for figures."""

    table: pd.DataFrame
    description: dict
    preds: list
    split: EvalSplit

    def metrics(self) -> dict:
        """Flat metrics.json entries: ``<method>/<semantics>/<label set>/<score>`` plus what produced them."""
        out = dict(self.description)
        for _, row in self.table.iterrows():
            key = f"{row['key']}/{row['labels']}"
            for column in ("miou", "pixel_acc"):
                out[f"{key}/{column}"] = None if math.isnan(row[column]) else float(row[column])
            for column in ("clusters_over_1pct", "entropy", "largest_cluster", "effective_rank"):
                value = row.get(column)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    out[f"{row['key']}/{column}"] = float(value)
        return out

    def report(self) -> str:
        shown = self.table.copy()
        for column in ("miou", "pixel_acc"):
            shown[column + " %"] = (100 * shown[column]).round(2)
        columns = ["method", "semantics", "labels", "K", "pixel_acc %", "miou %", "clusters_over_1pct", "entropy",
                   "effective_rank"]
        return (f"{MODEL_LABEL}; {self.description['dataset']}; Hungarian matching over the split\n"
                + shown[columns].to_string(index=False))


def evaluate_san(model: SAN, *, split: str | None = None, limit: int | None = None, kmeans: bool = True,
                 progress: bool = True, seed: int = 0) -> SANEvaluation:
    """Score SAN with both test-time semantics (``memory`` only when the model was trained) on every label set,
    with the collapse diagnostics and, when ``kmeans``, the raw-RGB and random-CNN k-means baselines at K = N."""
    model.eval()
    cfg = model.cfg
    data = load_eval_split(cfg, split, limit, progress)
    k = cfg.n_prototypes
    embeddings = sample_embeddings(model, data.images, seed=seed)
    rows, default_preds = [], None
    modes = ["batch", "memory"] if int(model.memory_updates) else ["batch"]
    batch = cfg.eval_batch_size or cfg.batch_size
    for mode in modes:
        preds = predict_split(model, data.images, mode)
        if mode == cfg.eval_semantics or default_preds is None:
            default_preds = preds
        diag = collapse_diagnostics(preds, k, embeddings)
        for labels, (miou, acc) in score(preds, data, k).items():
            rows.append({"key": f"san/{mode}", "method": "SAN", "semantics": SEMANTICS_LABEL[mode].format(b=batch),
                         "labels": labels, "K": k, "miou": miou, "pixel_acc": acc, **diag})
    if kmeans:
        encoder = random_encoder(cfg)
        baselines = {"rgb_kmeans": ("raw-RGB k-means", None),
                     "random_cnn_kmeans": ("random-CNN k-means (SAN's encoder at init)",
                                           lambda x: encoder(network_input(x, cfg.input_mode)))}
        for key, (name, fn) in baselines.items():
            preds = pixel_kmeans(data.images, k, fn, seed=seed)
            diag = collapse_diagnostics(preds, k)
            for labels, (miou, acc) in score(preds, data, k).items():
                rows.append({"key": key, "method": name, "semantics": "-", "labels": labels, "K": k, "miou": miou,
                             "pixel_acc": acc, **diag})
    description = {"method": "SAN", "model": MODEL_LABEL, "backbone": model.backbone.name,
                   "dataset": data.description, "n_images": len(data.images), "n_prototypes": k,
                   "embed_dim": cfg.embed_dim, "eval_semantics": cfg.eval_semantics, "eval_batch_size": batch,
                   "variant": variant_name(cfg), "semantics": cfg.semantics, "token_matcher": cfg.token_matcher,
                   "reconstruction": cfg.reconstruction, "consistency": cfg.consistency}
    return SANEvaluation(pd.DataFrame(rows), description, default_preds, data)


def variant_name(cfg) -> str:
    """The switches of the paper's ambiguities, as one label for tables."""
    return (f"semantics={cfg.semantics}, matcher={cfg.token_matcher}, consistency="
            f"{cfg.consistency if cfg.reconstruction else 'embedding (no reconstruction)'}, "
            f"orthogonality={cfg.orthogonality}")


__all__ = ["MODEL_LABEL", "evaluate_san", "SANEvaluation", "load_eval_split", "predict_split", "sample_embeddings",
           "score", "label_sets", "variant_name", "random_encoder"]
