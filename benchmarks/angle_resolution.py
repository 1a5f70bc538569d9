"""DCN's angle pattern against the size of objects in patches: the same backbone's per-image and dataset angles
(:func:`nbseg.angles.angle_study`, full labels) on the training render's val split (96 px) and on the val split of
the same world drawn at larger sizes, each with every pixel (DCN's definition) and with "pure" patches only (one
class covers >= 95% of the patch). (Scene i differs in detail between renders: the noise textures draw one random
number per pixel.)

Why: a patch that straddles two classes gives one embedding to both of their centres, which pulls *one image's*
centres together, while over the dataset those contaminations come from many different neighbours. The world's
objects are 4-7 patches across at 96 px, so about 45% of the (patch, class) rows straddle a boundary; DINO ViT-S/8
sees PASCAL VOC at its native ~500 px, where objects span tens of patches. The world's textures have periods in
pixels and its objects sizes relative to the image, so a larger render keeps the texture scale the backbone was
trained on and makes the objects larger in patches, like a real image at a higher resolution. This measurement is
why the probes read the world drawn at 192 px (``nbseg.world.PROBE_SIZE``).

    python benchmarks/angle_resolution.py [--weights FILE] [--sizes 192] [--json OUT.json]

The larger worlds are written (val only, 300 images) under ``data/world_val<size>`` when absent (~15 s each).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _report import emit


def main(argv=None) -> int:
    from nbseg.angles import angle_study
    from nbseg.backbones import EMBEDDED_ARCH, load
    from nbseg.data import load_dataset
    from nbseg.probes import extract_dataset
    from nbseg.runs import environment_info
    from nbseg.world import WorldSpec, ensure_world

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="weights file of the embedded architecture (default: shipped)")
    p.add_argument("--sizes", type=int, nargs="+", default=[192], help="larger render sizes (multiples of 8)")
    p.add_argument("--pure-share", type=float, default=0.95, help="a 'pure' patch: one class covers this share")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    backbone = load(EMBEDDED_ARCH, weights=args.weights) if args.weights else load("embedded")
    worlds = {WorldSpec().size: load_dataset("world", split="val", labels="full")}
    for size in args.sizes:
        spec = WorldSpec(size=size, n_train=8)
        root = ensure_world(Path("data") / f"world_val{size}", spec, progress=False)
        worlds[size] = load_dataset("world", root=root, split="val", labels="full")
    rows = []
    for size, val in worlds.items():
        feats = extract_dataset(backbone, val, progress=True)
        grid = tuple(feats.patches.shape[1:3])
        for name, share in (("every pixel (DCN)", 0.0), (f"pure patches (>= {args.pure_share:g})", args.pure_share)):
            s = angle_study(feats.patches, feats.labels, val.num_classes, min_share=share).summary()
            rows.append({"image_px": size, "patch_grid": f"{grid[0]}x{grid[1]}", "rows": name,
                         **{k: round(v, 2) for k, v in s.items() if k.endswith("_deg")},
                         "pattern_met": s["per_image_intra_deg"] < s["dataset_intra_deg"]
                         and s["per_image_inter_deg"] > s["dataset_inter_deg"]})
    for r in rows:
        print(f"{r['image_px']:>4} px ({r['patch_grid']}), {r['rows']:<26} intra {r['per_image_intra_deg']:.1f} vs "
              f"{r['dataset_intra_deg']:.1f}, inter {r['per_image_inter_deg']:.1f} vs {r['dataset_inter_deg']:.1f}"
              f" (per image vs dataset): pattern {'met' if r['pattern_met'] else 'not met'}")
    emit({"machine": environment_info(), "backbone": backbone.describe(), "dataset": "world/val, full labels, 300 images",
          "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
