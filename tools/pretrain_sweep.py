"""Run several `nbseg pretrain` variants side by side within a time budget, then measure each one's quality.

Written for a lent GPU (one call of at most 10 minutes): every variant first runs a short probe to measure its
step rate *while the others run too*, then gets as many epochs as fit in ``--budget-s`` (so each cosine schedule
completes), is exported as an fp16 weights file and measured by ``benchmarks/embedded_quality.py``.

    python tools/pretrain_sweep.py OUT_DIR --budget-s 400 \\
        --common device=cuda augment_on=device batch_size=256 \\
        --variant dino: --variant ibot:patch_loss_weight=1.0,hue=0.5

Warm-ups scale with the epochs granted: ``warmup_epochs = warmup_frac * epochs`` and
``warmup_teacher_temp_epochs = temp_warmup_frac * epochs``. Writes OUT_DIR/sweep.json and OUT_DIR/<name>.pt.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_all(commands: dict[str, list[str]], logs: Path) -> dict[str, int]:
    procs = {name: subprocess.Popen(cmd, stdout=open(logs / f"{name}.log", "a"), stderr=subprocess.STDOUT)
             for name, cmd in commands.items()}
    return {name: p.wait() for name, p in procs.items()}


def _pretrain_cmd(run_dir: Path, config: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "nbseg", "pretrain", str(run_dir), *overrides, "--config", config, "--no-progress"]


def _rate(log_csv: Path) -> float:
    rows = list(csv.DictReader(open(log_csv)))
    first, last = rows[len(rows) // 3], rows[-1]
    return (int(last["step"]) - int(first["step"])) / max(float(last["seconds"]) - float(first["seconds"]), 1e-6)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--config", default=str(REPO / "nbseg/configs/pretrain_embedded.yaml"))
    p.add_argument("--common", nargs="*", default=[], help="key=value overrides for every variant")
    p.add_argument("--variant", action="append", required=True, help="NAME:key=value,key=value")
    p.add_argument("--budget-s", type=float, required=True, help="training seconds per variant (concurrent)")
    p.add_argument("--probe-steps", type=int, default=40)
    p.add_argument("--warmup-frac", type=float, default=0.1)
    p.add_argument("--temp-warmup-frac", type=float, default=0.3)
    p.add_argument("--n-images", type=int, default=2000, help="train images (steps per epoch = n / batch)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = {}
    for spec in args.variant:
        name, _, kv = spec.partition(":")
        variants[name] = [x for x in kv.split(",") if x]
    batch = int(next((o.split("=")[1] for o in args.common[::-1] if o.startswith("batch_size=")), 32))
    steps_per_epoch = args.n_images // batch

    t0 = time.perf_counter()
    _run_all({n: _pretrain_cmd(out / f"probe_{n}", args.config,
                               [*args.common, *kv, "epochs=100", f"max_steps={args.probe_steps}", "log_every=5"])
              for n, kv in variants.items()}, out)
    for n in [n for n in variants if not (out / f"probe_{n}" / "log.csv").exists()]:
        print(f"variant {n} failed its probe; see {out / (n + '.log')}:\n" + (out / f"{n}.log").read_text()[-2000:])
        variants.pop(n)
    rates = {n: _rate(out / f"probe_{n}" / "log.csv") for n in variants}
    epochs = {n: max(2, int(args.budget_s * r / steps_per_epoch)) for n, r in rates.items()}
    print(f"probe {time.perf_counter() - t0:.0f}s; steps/s {rates}; epochs {epochs}", flush=True)

    t1 = time.perf_counter()
    codes = _run_all({n: _pretrain_cmd(out / n, args.config, [
        *args.common, *kv, f"epochs={epochs[n]}", f"warmup_epochs={max(1, int(args.warmup_frac * epochs[n]))}",
        f"warmup_teacher_temp_epochs={int(args.temp_warmup_frac * epochs[n])}"]) for n, kv in variants.items()}, out)
    train_s = time.perf_counter() - t1
    print(f"training {train_s:.0f}s; exit codes {codes}", flush=True)

    for n in [n for n, code in codes.items() if code != 0]:
        print(f"variant {n} exited with {codes[n]}:\n" + (out / f"{n}.log").read_text()[-2000:])
        variants.pop(n)
    for n in variants:
        subprocess.run([sys.executable, "-m", "nbseg", "pretrain", "export", str(out / n), str(out / f"{n}.pt"),
                        "--fp16"], check=True)
    _run_all({n: [sys.executable, str(REPO / "benchmarks/embedded_quality.py"), "--weights", str(out / f"{n}.pt"),
                  "--skip-random", "--json", str(out / f"{n}_quality.json")] for n in variants}, out)
    report = {}
    for n, kv in variants.items():
        q = json.loads((out / f"{n}_quality.json").read_text())["results"]["trained"] \
            if (out / f"{n}_quality.json").exists() else {}
        log = list(csv.DictReader(open(out / n / "log.csv")))
        report[n] = {"overrides": [*args.common, *kv], "epochs": epochs[n], "steps_per_s": round(rates[n], 2),
                     "final_loss": log[-1]["loss"] if log else None, "quality": q}
    (out / "sweep.json").write_text(json.dumps(report, indent=1))
    for n, r in report.items():
        q = r["quality"]
        print(f"{n:>10} ep {r['epochs']:4d} loss {r['final_loss']} sal {q.get('saliency_iou_dino60', float('nan')):.3f}"
              f" km {q.get('kmeans_dataset_miou', float('nan')):.3f} lp {q.get('linear_probe_pixel_acc', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
