"""AlignSeg on the world with the embedded backbone: quality against k-means, Table II checks, speed, resume.

Measured on the world's val split (voc labels: background + 8 things), every number under both protocols
(dataset-level Hungarian; AlignSeg's released per-image many-to-one precision protocol at 100x100):

  * AlignSeg end to end (both variants) vs per-image and dataset-level k-means on the same frozen features, K equal;
  * Table II on the world: L_corr + L_proto vs either alone, v_l = 2 vs 1, K = 5 / 10 / 15 (official variant);
  * inference throughput, images/s: ``AlignSeg.predict`` vs backbone-only ``extract`` at the same input size and
    batch (interleaved repeats, median), and one training step split into its backbone part (ViT on every crop +
    saliency) and its decoder part (decoder, losses, backward, AdamW step);
  * resume: a run stopped mid-epoch (``max_steps``) and resumed vs the uninterrupted run, same seed (CPU).

All runs share one seed, so they see the same crops; a :class:`~nbseg.methods.alignseg.CropFeatureCache` computes
the frozen backbone once per crop for all of them (the resumed run included: resume is about the decoder, the
optimiser, the schedule and the data order; the backbone is frozen and deterministic).

    python benchmarks/alignseg_world.py --quick [--json artifacts/alignseg_world_quick.json]   # ~5-8 min, 2 cores
    python benchmarks/alignseg_world.py [--weights FILE] [--json OUT.json]                      # ~25 min, 2 cores

Defaults: the shipped embedded backbone (``--weights`` for another file of the same architecture).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _report import emit

MODES = {   # training images, epochs, throughput input sizes, timing repeats
    "quick": {"train_images": 480, "epochs": 2, "sizes": [96], "repeats": 5},
    "full": {"train_images": None, "epochs": 3, "sizes": [96, 192], "repeats": 7},
}
ABLATIONS = {   # name -> config overrides on top of the official baseline (Table II (a), (b))
    "L_corr only": {"alpha": 0.0},
    "L_proto only": {"beta": 0.0},
    "v_l=1": {"n_local": 1},
    "K=5": {"n_prototypes": 5},
    "K=15": {"n_prototypes": 15},
}


def median_ms(values) -> float:
    return round(1000 * statistics.median(values), 1)


def throughput(method, size: int, batch: int, repeats: int) -> dict:
    """Images/s of backbone-only ``extract`` and of ``predict`` (extract + decoder + Eq. 2-3), interleaved."""
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    method.backbone.extract(images)
    method.predict(images)                                           # warm-up
    t_extract, t_predict = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        method.backbone.extract(images)
        t_extract.append(time.perf_counter() - t)
        t = time.perf_counter()
        method.predict(images)
        t_predict.append(time.perf_counter() - t)
    e, p = statistics.median(t_extract), statistics.median(t_predict)
    return {"size": size, "batch": batch, "extract_images_per_s": round(batch / e, 2),
            "predict_images_per_s": round(batch / p, 2), "ratio": round(e / p, 3), "repeats": repeats}


def step_breakdown(method, batch: dict, repeats: int) -> dict:
    """One training step (batch of ``len(batch['id'])``) split into backbone and decoder parts, interleaved."""
    opt = torch.optim.AdamW(method.parameter_groups(), lr=method.cfg.lr)
    saved = copy.deepcopy(method.decoder.state_dict())
    method.feature_cache = None
    t_backbone, t_decoder = [], []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        x_g, m_g, x_l, m_l = method.crop_tokens(batch)
        t_backbone.append(time.perf_counter() - t)
        t = time.perf_counter()
        loss = method.alignment_losses(x_g, m_g, x_l, m_l)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t_decoder.append(time.perf_counter() - t)
    method.decoder.load_state_dict(saved)
    b, d = statistics.median(t_backbone[1:]), statistics.median(t_decoder[1:])
    return {"batch": len(batch["id"]), "crops_per_image": 1 + method.cfg.n_local, "backbone_ms": round(1000 * b, 1),
            "decoder_ms": round(1000 * d, 1), "backbone_share": round(b / (b + d), 3), "repeats": repeats}


def main(argv=None) -> int:
    from nbseg.backbones import EMBEDDED_ARCH, load
    from nbseg.data.multicrop import collate_multicrop
    from nbseg.methods.alignseg import CropFeatureCache, evaluation_dataset, training_dataset
    from nbseg.methods.alignseg.evaluation import (evaluate_alignseg, kmeans_baselines, load_alignseg_config,
                                             train_alignseg)
    from nbseg.probes import extract_dataset
    from nbseg.train import load_checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="480 train images, 2 epochs, fewer repeats (~5-8 min)")
    p.add_argument("--weights", default=None, help="weights for the embedded architecture (default: shipped)")
    p.add_argument("--epochs", type=int, default=None, help="override the mode's epochs")
    p.add_argument("--train-images", type=int, default=None, help="override the mode's number of train images")
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="config overrides for every run")
    p.add_argument("--runs", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    mode = dict(MODES["quick" if args.quick else "full"])
    t_start = time.perf_counter()
    torch.manual_seed(0)

    backbone = load(EMBEDDED_ARCH, weights=args.weights) if args.weights else load("embedded")
    base = {"epochs": args.epochs or mode["epochs"], "max_train_images": args.train_images or mode["train_images"],
            "device": "cpu", "log_every": 5}
    if args.weights:
        base.update(backbone=EMBEDDED_ARCH, weights=args.weights)
    base.update(dict(kv.split("=", 1) for kv in args.set))
    cfg = load_alignseg_config("world", base)
    val = evaluation_dataset(cfg)
    features = extract_dataset(backbone, val, progress=False)
    K = cfg.n_prototypes
    baselines = {k: kmeans_baselines(features, val, k, seed=cfg.seed) for k in sorted({K, 5, 15})}
    cache = CropFeatureCache()
    runs_root = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="alignseg_world_"))
    n_train = len(training_dataset(cfg))

    def train_and_score(name: str, overrides: dict, **kw):
        run_cfg = load_alignseg_config("world", {**base, **overrides})
        t = time.perf_counter()
        method, summary = train_alignseg(run_cfg, runs_root / name, progress=False, backbone=backbone,
                                         feature_cache=cache, **kw)
        ev = evaluate_alignseg(method, val, features=features, kmeans=baselines.get(run_cfg.n_prototypes, False),
                               progress=False)
        row = {"run": name, "overrides": overrides, "variant": run_cfg.variant, "K": run_cfg.n_prototypes,
               "v_l": run_cfg.n_local, "steps": summary["steps"], "seconds": round(time.perf_counter() - t, 1),
               "final_loss": round(summary["loss"], 4)}
        row.update({f"{r['method']} / {r['protocol']}": round(100 * r["miou"], 2) for _, r in ev.table.iterrows()
                    if r["method"].startswith("AlignSeg")})            # k-means: once per K in the report
        print(f"  {name}: hungarian {row[f'AlignSeg ({run_cfg.variant}) / hungarian']:.2f}, per-image "
              f"{row[f'AlignSeg ({run_cfg.variant}) / per-image']:.2f} ({row['seconds']} s)", flush=True)
        return method, ev, row

    print(f"training on {n_train} world train images, {base['epochs']} epochs; runs in {runs_root}", flush=True)
    official, ev_official, row_official = train_and_score("official", {"variant": "official"})
    _, ev_paper, row_paper = train_and_score("paper", {"variant": "paper"})
    ablation_rows = {name: train_and_score(name, {"variant": "official", **ov})[2]
                     for name, ov in ABLATIONS.items()}

    # Resume: stop mid-epoch 1, then rerun the same config to the end; compare with the uninterrupted run.
    per_epoch = n_train // cfg.batch_size
    stop = per_epoch + per_epoch // 2
    train_and_score("resumed", {"variant": "official", "max_steps": stop})
    _, ev_resumed, row_resumed = train_and_score("resumed", {"variant": "official"})
    a, b = load_checkpoint(runs_root / "official"), load_checkpoint(runs_root / "resumed")
    resume = {"stopped_at_step": stop, "total_steps": a["step"],
              "weights_identical": all(torch.equal(a["trainable"][k], b["trainable"][k]) for k in a["trainable"]),
              "metrics_identical": ev_resumed.metrics() == ev_official.metrics(),
              "uninterrupted_hungarian": row_official["AlignSeg (official) / hungarian"],
              "resumed_hungarian": row_resumed["AlignSeg (official) / hungarian"]}

    # Speed: inference throughput and one training step split into backbone and decoder parts.
    speed = {"threads": torch.get_num_threads(),
             "throughput": [throughput(official, s, 32, mode["repeats"]) for s in mode["sizes"]]}
    ds = training_dataset(cfg)
    batch = collate_multicrop([ds[(i, 1000 + i)] for i in range(cfg.batch_size)])
    speed["train_step"] = step_breakdown(official, batch, mode["repeats"])

    def hung(row, variant="official"):
        return row[f"AlignSeg ({variant}) / hungarian"]

    km = {f"{r['method']} / {r['protocol']}": round(100 * r["miou"], 2) for r in baselines[K].rows}
    checks = {
        "official beats dataset k-means (hungarian)": hung(row_official) > km["dataset k-means / hungarian"],
        "official beats per-image k-means (hungarian)": hung(row_official) > km["per-image k-means / hungarian"],
        "paper beats dataset k-means (hungarian)": hung(row_paper, "paper") > km["dataset k-means / hungarian"],
        "paper beats per-image k-means (hungarian)": hung(row_paper, "paper") > km["per-image k-means / hungarian"],
        "L_corr+L_proto > L_corr only (paper: 69.5 > 66.4)": hung(row_official) > hung(ablation_rows["L_corr only"]),
        "L_corr+L_proto > L_proto only (paper: 69.5 > 29.5)": hung(row_official) > hung(ablation_rows["L_proto only"]),
        "v_l=2 > v_l=1 (paper: 69.5 > 66.9)": hung(row_official) > hung(ablation_rows["v_l=1"]),
        f"K: 5 / {K} / 15 hungarian (paper, per-image: 69.5 / 73.2 / 73.3)": [
            hung(ablation_rows["K=5"]), hung(row_official), hung(ablation_rows["K=15"])],
        "predict >= 90% of extract throughput": all(t["ratio"] >= 0.9 for t in speed["throughput"]),
        "resume reproduces the uninterrupted run": resume["weights_identical"] and resume["metrics_identical"],
    }
    report = {
        "mode": "quick" if args.quick else "full",
        "backbone": backbone.describe(), "dataset": features.dataset, "train_images": n_train,
        "epochs": base["epochs"], "batch_size": cfg.batch_size, "config": "nbseg/configs/alignseg_world.yaml",
        "overrides": {k: v for k, v in base.items() if k not in ("device", "log_every")},
        "note": "embedded ViT-Tiny/8 on the synthetic world: not the paper's numbers; mIoU in %",
        "kmeans": {f"K={k}": {f"{r['method']} / {r['protocol']}": round(100 * r["miou"], 2) for r in b.rows}
                   for k, b in baselines.items()},
        "alignseg": {"official": row_official, "paper": row_paper},
        "table_ii": ablation_rows, "resume": resume, "speed": speed, "checks": checks,
        "feature_cache": {"items": len(cache), "hits": cache.hits, "misses": cache.misses},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
