"""Epoch time with the feature cache against recomputing the frozen backbone every epoch.

Every run goes through the same batch pipeline (the training loop's ``epoch_loader`` with the same ``(index, seed)``
batches of ``--batch-size``); cached runs read fp16 patch tokens from the memory-mapped cache, uncached runs read the
images from disk, resize them and run the backbone. Two measurements:

* ``features``: an epoch of delivering the patch tokens of every batch (what the cache replaces);
* ``train``: an epoch of DCN training on them (forward, modularity loss, backward, AdamW step), the same steps in
  both modes. Its speed-up is bounded by the DCN step itself (Amdahl): with the tiny embedded ViT (6 blocks over
  145 tokens of 192-d) a DCN step (12 attention + FFN blocks on 5 prototypes, forward and backward) costs about as
  much as the backbone, with a ViT-S/8 at 224 the backbone is some 40x the DCN step.

The one-off cost of building the cache is reported separately.

    python benchmarks/feature_cache.py [--quick] [--n-images N] [--epochs E] [--json OUT.json]

Defaults: the embedded backbone on the world's train split (generated when absent), the DCN settings of
``nbseg/configs/dcn_world.yaml``; the cache goes to ``artifacts/feature_cache`` unless ``--cache-root`` says
otherwise (a cache already there is reused; its build time is then ~0 and ``cache_reused`` is true).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from _report import emit

REPO = Path(__file__).resolve().parents[1]


class ImageItems(torch.utils.data.Dataset):
    """The uncached items: ``dataset[(index, seed)] -> {"index", "image"}`` resized to ``size`` (what the cache
    stores features of)."""

    def __init__(self, dataset, size: int, n: int):
        self.dataset, self.size, self.n = dataset, size, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item) -> dict:
        from nbseg.data.base import resize_pair

        index = int(item[0])
        image = resize_pair(self.dataset[index].image, None, (self.size, self.size))[0]
        return {"index": index, "image": image}


def time_feature_epochs(method, items, cfg, epochs: int) -> list[float]:
    """Seconds per epoch of delivering the patch tokens of the loop's batches (cached read or backbone pass)."""
    from nbseg.train.data import epoch_loader, rank_batches

    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for batch in epoch_loader(items, rank_batches(len(items), cfg.batch_size, cfg.seed, epoch), None, 0,
                                  cfg.seed, epoch):
            patches = method._patches(batch)
            assert patches.ndim == 4
        seconds.append(time.perf_counter() - start)
    return seconds


def time_epochs(method, items, cfg, epochs: int) -> list[float]:
    """Seconds per epoch of DCN steps over ``items`` (fresh AdamW, the loop's batches for each epoch)."""
    from nbseg.train.data import epoch_loader, rank_batches

    method.train()
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        batches = rank_batches(len(items), cfg.batch_size, cfg.seed, epoch)
        for batch in epoch_loader(items, batches, None, 0, cfg.seed, epoch):
            loss = method.training_step(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> int:
    from nbseg.backbones import load
    from nbseg.config import load_config
    from nbseg.features.cache import build_feature_cache, cache_dir, cache_key
    from nbseg.methods.dcn import DCN, DCNConfig, open_split

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="128 images, 1 epoch each (a smoke measurement)")
    p.add_argument("--n-images", type=int, default=None, help="train images per epoch (default: all; quick: 128)")
    p.add_argument("--epochs", type=int, default=None, help="epochs timed per mode (default 2; quick: 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (DCN's batch, 32)")
    p.add_argument("--cache-root", default=None, help="feature cache root (default artifacts/feature_cache)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = load_config(DCNConfig, REPO / "nbseg" / "configs" / "dcn_world.yaml",
                      {"batch_size": args.batch_size, "device": "cpu"})
    dataset = open_split(cfg, "train")
    n = args.n_images or (128 if args.quick else len(dataset))
    epochs = args.epochs or (1 if args.quick else 2)
    backbone = load(cfg.backbone, cfg.weights, random_init=cfg.random_init)
    reused = (cache_dir(cache_key(backbone, dataset, cfg.input_size, n), args.cache_root) / "manifest.json").is_file()
    start = time.perf_counter()
    cache = build_feature_cache(backbone, dataset, cfg.input_size, root=args.cache_root, limit=n)
    build_seconds = time.perf_counter() - start
    items = {"cached": cache.dataset(("patches",)), "uncached": ImageItems(dataset, cfg.input_size, n)}
    method = DCN(cfg, backbone=backbone)
    timings = {f"features_{mode}": time_feature_epochs(method, ds, cfg, epochs) for mode, ds in items.items()}
    timings.update({f"train_{mode}": time_epochs(DCN(cfg, backbone=backbone), ds, cfg, epochs)
                    for mode, ds in items.items()})
    report = {
        "what": "epoch time, cached fp16 features vs recomputing the backbone (same batches, same DCN steps)",
        "backbone": backbone.describe(), "dataset": dataset.describe(), "n_images": n,
        "input_size": cfg.input_size, "batch_size": cfg.batch_size, "epochs_timed": epochs,
        "torch_threads": torch.get_num_threads(), "device": "cpu",
        **{f"epoch_seconds_{name}": [round(s, 3) for s in values] for name, values in timings.items()},
        **{f"speedup_{kind}": round(min(timings[f"{kind}_uncached"]) / min(timings[f"{kind}_cached"]), 2)
           for kind in ("features", "train")},
        "cache_build_seconds": round(build_seconds, 2), "cache_reused": reused, "cache_path": str(cache.path),
        "cache_megabytes": round(sum(f.stat().st_size for f in cache.path.glob("*.npy")) / 2 ** 20, 1),
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
