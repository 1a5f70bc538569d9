"""``Backbone.extract`` vs timm's plain ``forward_features`` on the same model and input.

extract adds the CLS-attention row of the last block (from the captured qkv projection) and the reshaping; the
target is a ratio within 1.10. Timings interleave the two calls and report medians.

    python benchmarks/extract_speed.py [--device cuda] [--repeats 20] [--json OUT]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from _report import emit

CASES = [  # (backbone name, image size, batch)
    ("embedded", 96, 32),
    ("vit_small_patch16_224.dino", 224, 8),
    ("vit_small_patch8_224.dino", 224, 4),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_case(name: str, size: int, batch: int, device: str, repeats: int) -> dict:
    from nbseg.backbones import load

    bb = load(name, random_init=True, device=device)
    dev = torch.device(device)
    x = torch.rand(batch, 3, size, size, device=dev)
    for _ in range(3):                       # warm-up (allocator, kernels)
        bb.extract(x)
        bb.forward_features(x)
    t_extract, t_ff = [], []
    for _ in range(repeats):
        _sync(dev); t0 = time.perf_counter(); bb.extract(x); _sync(dev); t_extract.append(time.perf_counter() - t0)
        _sync(dev); t0 = time.perf_counter(); bb.forward_features(x); _sync(dev); t_ff.append(time.perf_counter() - t0)
    e, f = statistics.median(t_extract), statistics.median(t_ff)
    return {"backbone": name, "size": size, "batch": batch, "device": device, "extract_ms": round(e * 1e3, 2),
            "forward_features_ms": round(f * 1e3, 2), "ratio": round(e / f, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from nbseg.runs import environment_info

    rows = [time_case(n, s, b, args.device, args.repeats) for n, s, b in CASES]
    report = {"machine": environment_info(), "torch_threads": torch.get_num_threads(), "results": rows}
    for r in rows:
        print(f"{r['backbone']:32s} {r['size']}px x{r['batch']} on {r['device']}: extract {r['extract_ms']} ms, "
              f"forward_features {r['forward_features_ms']} ms, ratio {r['ratio']}")
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
