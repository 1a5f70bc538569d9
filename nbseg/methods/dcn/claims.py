"""DCN's central claims as rows of ``nbseg claims`` (:mod:`nbseg.claims`), each measured once per seed.

* Region classification (k-means of DCN's foreground region embeddings, Table 1) beats k-means of the patch tokens.
* §1: within one image, pixel embeddings are more compact per class and classes further apart than over the
  dataset (the angles of notebook 04, :mod:`nbseg.angles`).
* §4.2 / Fig. 4: the number of regions follows the scene's complexity (regions per image against the classes the
  image holds; on the world, things and stuff).

A seed changes DCN's initialisation and data order and the k-means initialisation (training claims), and which val
images the angle probe draws. DCN trains in ``OUT/runs/dcn/seed<k>`` on a feature cache in ``OUT/feature_cache``
(the frozen backbone runs once per image for every seed).
"""
from __future__ import annotations

import math

import torch

from nbseg.angles import DCN_REPORTED, angle_study
from nbseg.claims import Claim, Measurement
from nbseg.methods.dcn.evaluation import TABLE_1_PROTOCOL, evaluate_dcn, notebook_config, train_dcn
from nbseg.methods.dcn.paper import PAPER_TABLE_1

# Sizes per profile. smoke: a few steps on a few images (tests); full: about 12 of the table's ~45 CPU minutes.
SETTINGS = {
    "smoke": {"train": {"cache_limit": 32, "batch_size": 16, "max_steps": 6, "log_every": 2,
                        "checkpoint_every": 6}, "val": 16, "gallery": 16, "angles": 12},
    "full": {"train": {"cache_limit": 1000, "max_steps": 800}, "val": 300, "gallery": 64, "angles": 200},
}
STEGO = "classes present or predicted (STEGO: a predicted absent class scores 0)"


def _evaluation(ctx, seed: int):
    """DCN trained (or resumed / loaded) with ``seed``, evaluated on the val split with one k-means of that seed."""
    def compute():
        sizes = ctx.pick(SETTINGS)
        overrides = {**sizes["train"], **ctx.data_overrides(), "seed": seed,
                     "cache_root": str(ctx.out_dir / "feature_cache")}
        cfg = notebook_config("world", overrides)
        method, _ = train_dcn(cfg, ctx.run_dir("dcn", f"seed{seed}"), backbone=ctx.backbone(), progress=False)
        return evaluate_dcn(method, val_limit=sizes["val"], gallery_limit=sizes["gallery"], seeds=[seed], ks=(5,),
                            progress=False)
    return ctx.memo("dcn evaluation", compute, seed=seed)


def _measurement(ctx, ev, effect: float, values: dict) -> Measurement:
    return Measurement(effect, values, ev.description["backbone"], ev.description["dataset"])


def _regions_vs_patches(ctx, seed: int) -> Measurement:
    ev = _evaluation(ctx, seed)
    values = {"DCN regions + k-means": ev.table1.summary()["miou_stego_mean"],
              "k-means of patch tokens": ev.baseline["miou_stego_mean"]}
    return _measurement(ctx, ev, values["DCN regions + k-means"] - values["k-means of patch tokens"], values)


def _regions_follow_complexity(ctx, seed: int) -> Measurement:
    ev = _evaluation(ctx, seed)
    counts = ev.counts.get("full", ev.counts["gt"])          # things and stuff on the world: what a scene holds
    rho = counts["spearman"]
    values = {"Spearman rho": 0.0 if math.isnan(rho) else rho, "mean regions per image": counts["mean_regions"]}
    return _measurement(ctx, ev, values["Spearman rho"], values)


def _angles(ctx, seed: int) -> dict:
    """Intra- and inter-class angles per image and over the drawn images (degrees)."""
    def compute():
        dataset, features = ctx.features("val", limit=ctx.pick(SETTINGS)["val"])
        n = min(ctx.pick(SETTINGS)["angles"], len(features.ids))
        pick = torch.randperm(len(features.ids), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        fs = features.subset(pick)
        summary = angle_study(fs.patches, fs.labels, dataset.num_classes).summary()
        return {**summary, "dataset": f"{features.dataset}, {n} images drawn", "backbone": ctx.backbone().describe()}
    return ctx.memo("dcn angles", compute, seed=seed)


def _angle_claim(which: str):
    def measure(ctx, seed: int) -> Measurement:
        s = _angles(ctx, seed)
        values = {"per image": s[f"per_image_{which}_deg"], "over the dataset": s[f"dataset_{which}_deg"]}
        effect = (values["over the dataset"] - values["per image"] if which == "intra"
                  else values["per image"] - values["over the dataset"])
        return Measurement(effect, values, s["backbone"], s["dataset"])
    return measure


def dcn_claims() -> list[Claim]:
    """The rows DCN adds to the claims table (``MethodSpec.claims``)."""
    dcn_row = PAPER_TABLE_1[-1]
    reported = DCN_REPORTED
    angles = (f"paper's §1 (DINO ViT-S/8, PASCAL VOC 2012): intra-class {reported['per image']['intra_deg']}° per "
              f"image vs {reported['dataset']['intra_deg']}° over the dataset; inter-class "
              f"{reported['per image']['inter_deg']}° vs {reported['dataset']['inter_deg']}°")
    return [
        Claim(key="dcn/regions-above-patch-kmeans", method="dcn",
              claim="classifying DCN's regions (k-means of region embeddings) segments better than k-means of the "
                    "patch tokens",
              paper_evidence=f"paper's Table 1 (PASCAL VOC 2012 val, DINO ViT-S/8): DCN + k-means {dcn_row[1]} ± "
                             f"{dcn_row[2]} mIoU, above the region-clustering methods (MaskDistill 42.0, DSM 37.2); "
                             "no patch k-means row",
              measure=_regions_vs_patches, effect="DCN regions - patch k-means", protocol=TABLE_1_PROTOCOL,
              averaging=STEGO, variant="foreground min-head (the paper's text); one k-means per seed"),
        Claim(key="dcn/per-image-angles-intra", method="dcn",
              claim="within an image, a class's pixel embeddings are tighter than over the dataset",
              paper_evidence=angles, measure=_angle_claim("intra"),
              effect="dataset intra-class angle - per-image intra-class angle", unit="degrees", scale=1.0,
              protocol="angle to the class centre (pixel-weighted patch embeddings)",
              averaging="per image: mean over images; dataset: one set of centres", variant="probe (no training)"),
        Claim(key="dcn/per-image-angles-inter", method="dcn",
              claim="within an image, classes lie further apart than over the dataset",
              paper_evidence=angles, measure=_angle_claim("inter"),
              effect="per-image inter-class angle - dataset inter-class angle", unit="degrees", scale=1.0,
              protocol="smallest angle between class centres",
              averaging="per image: mean over images with 2+ classes; dataset: one set of centres",
              variant="probe (no training)"),
        Claim(key="dcn/regions-follow-complexity", method="dcn",
              claim="the number of regions DCN finds grows with the scene's complexity",
              paper_evidence="paper's §4.2 / Fig. 4: \"more detected groups in a complex scene than the simple one\" "
                             "(qualitative, PASCAL VOC 2012)",
              measure=_regions_follow_complexity, effect="Spearman rho of regions vs classes per image",
              unit="rho; regions", scale=1.0, protocol="regions per image vs ground-truth classes per image "
                                                        "(world: things and stuff)",
              averaging="over the scored images", variant="foreground not used"),
    ]


__all__ = ["dcn_claims", "SETTINGS"]
