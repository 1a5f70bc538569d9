"""Supervised ceiling for the embedded backbone's quality bars: the same ViT trained *with* the world's labels.

Why: the issue asks, where a bar is out of reach, what would change it. If even patch tokens trained with the
full labels give a frozen-feature linear probe far below the 85% bar, the bar is limited by the architecture and
the world (patch 8 on 96-px images, 12 x 12 tokens), not by the self-supervised method. This is a diagnostic, never
a shipped backbone: it sees the labels.

    python tools/supervised_ceiling.py OUT.pt [--epochs 300] [--device cuda]

Trains ViT + a linear per-patch classifier (logits upsampled bilinearly, cross-entropy on the full label set,
random flips and a random channel permutation so colour carries no class), writes the backbone as a weights file
(``nbseg.backbones.load(EMBEDDED_ARCH, weights=OUT.pt)``) and prints the trained classifier's val pixel accuracy;
then run ``benchmarks/embedded_quality.py --weights OUT.pt`` for the frozen-feature bars.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time

import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    from nbseg.backbones import EMBEDDED_ARCH, create_model
    from nbseg.data import load_dataset
    from nbseg.io import atomic_write_bytes
    from nbseg.train.schedules import cosine_schedule

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, default=None, help="train images (a smoke run)")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)

    def stack(split):
        ds = load_dataset("world", split=split, labels="full")
        n = len(ds) if split == "val" or args.limit is None else min(args.limit, len(ds))
        items = [ds[i] for i in range(n)]
        return (torch.stack([s.image for s in items]).to(dev), torch.stack([s.label for s in items]).to(dev),
                ds.num_classes)

    x_train, y_train, k = stack("train")
    x_val, y_val, _ = stack("val")
    vit = create_model(EMBEDDED_ARCH, pretrained=False, drop_path_rate=0.1).to(dev)
    head = torch.nn.Linear(vit.embed_dim, k).to(dev)
    params = list(vit.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    steps_per_epoch = max(1, len(x_train) // args.batch_size)
    lr = cosine_schedule(args.lr, 1e-6, args.epochs, steps_per_epoch, warmup_epochs=max(1, args.epochs // 20))
    mean = torch.tensor((0.485, 0.456, 0.406), device=dev).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=dev).view(1, 3, 1, 1)

    def logits(x):
        tokens = vit.forward_features((x - mean) / std)[:, vit.num_prefix_tokens:]
        side = x.shape[-1] // 8
        out = head(tokens).transpose(1, 2).reshape(len(x), k, side, side)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    t0, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        vit.train()
        for idx in torch.randperm(len(x_train), device=dev)[:steps_per_epoch * args.batch_size].view(
                steps_per_epoch, -1):
            x, y = x_train[idx], y_train[idx]
            flip = torch.rand(len(x), device=dev) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
            x = x[:, torch.randperm(3, device=dev)]            # colour carries no class in the world
            for g in opt.param_groups:
                g["lr"] = float(lr[step])
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = F.cross_entropy(logits(x).float(), y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if epoch % 25 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch} loss {loss.item():.3f} {time.perf_counter() - t0:.0f}s", flush=True)
    vit.eval()
    with torch.no_grad():
        pred = torch.cat([logits(x_val[i:i + 100]).argmax(1) for i in range(0, len(x_val), 100)])
    valid = y_val != 255
    acc = (pred[valid] == y_val[valid]).float().mean().item()
    meta = {"source": "tools/supervised_ceiling.py (trained WITH labels; a diagnostic, not a backbone to ship)",
            "epochs": args.epochs, "val_pixel_acc_trained_head": acc, "seconds": round(time.perf_counter() - t0, 1)}
    buf = io.BytesIO()
    torch.save({"arch": EMBEDDED_ARCH, "state_dict": {k_: v.half().cpu() for k_, v in vit.state_dict().items()},
                "meta": meta}, buf)
    atomic_write_bytes(args.out, buf.getvalue())
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
