"""nbseg.train.fit on a toy method: learning, exact resume, DDP equivalence, checkpoint contents and errors.

The toy: a frozen random linear "backbone" (under ``frozen_prefixes``) feeding a small trainable head with dropout,
regressing a fixed linear target from inputs that get per-item random noise drawn from the item seed.

Run as a module (``torchrun --standalone --nproc_per_node 2 -m tests.test_train_loop RUN_DIR key=value ...``) it
trains the toy once, which is how the DDP test launches it.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nbseg.config import load_config
from nbseg.consent import allow_unsafe_pickle
from nbseg.errors import ConfigError
from nbseg.train import CheckpointError, TrainConfig, build_from_checkpoint, fit, load_checkpoint
from nbseg.train.data import epoch_batches, item_seed, rank_batches
from nbseg.train.checkpoint import rng_state, set_rng_state
from nbseg.train.logs import read_log

REPO = Path(__file__).resolve().parents[1]
DIM = 6


@dataclass
class ToyConfig(TrainConfig):
    hidden: int = 8
    dropout: float = 0.1


class ToyData(torch.utils.data.Dataset):
    """Fixed inputs and targets; item ``(i, seed)`` adds noise drawn from a generator seeded by ``seed``."""

    name = "toy-regression"

    def __init__(self, n: int = 32):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, DIM, generator=g)
        self.y = self.x @ torch.randn(DIM, generator=g) * 0.3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = item
        noise = torch.randn(DIM, generator=torch.Generator().manual_seed(seed)) * 0.05
        return self.x[i] + noise, self.y[i]


class Toy(nn.Module):
    frozen_prefixes = ("backbone.",)

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        torch.manual_seed(1000 + cfg.seed)
        self.backbone = nn.Sequential(nn.Linear(DIM, DIM), nn.Dropout(0.5)).requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(DIM, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                  nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, 1))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def training_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        with torch.no_grad():
            f = self.backbone(x)
        pred = self.head(f).squeeze(-1)
        mse = ((pred - y) ** 2).mean()
        size = pred.abs().mean()
        return {"loss": mse + 0.01 * size, "mse": mse, "size": size}

    def after_step(self, step: int) -> None:
        self.seen += 1

    def provenance(self) -> dict:
        weights = b"".join(v.numpy().tobytes() for v in self.backbone.state_dict().values())
        return {"backbone": "toy-linear", "weights_sha256": hashlib.sha256(weights).hexdigest()}


class OtherToy(Toy):
    pass


def collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def toy_cfg(**kw) -> ToyConfig:
    base = dict(epochs=3, batch_size=8, lr=0.02, min_lr=0.001, warmup_epochs=1, weight_decay=0.01,
                weight_decay_end=0.05, clip_grad=1.0, log_every=1, checkpoint_every=100, device="cpu")
    base.update(kw)
    return load_config(ToyConfig, overrides=base)


def validation_mse(method: Toy) -> dict[str, float]:
    data = ToyData(n=16)
    return {"val_mse": float(((method.head(method.backbone(data.x)).squeeze(-1) - data.y) ** 2).mean())}


def train(run_dir, cls=Toy, **kw) -> dict:
    cfg = toy_cfg(**kw)
    return fit(cls(cfg), ToyData(), cfg, run_dir, collate_fn=collate, progress=False, evaluate=validation_mse)


def log_rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    return train(run_dir), run_dir


def test_epoch_order_and_rank_sharding():
    assert epoch_batches(10, 4, seed=0, epoch=0) == epoch_batches(10, 4, seed=0, epoch=0)
    single = rank_batches(12, 4, seed=3, epoch=1)
    r0 = rank_batches(12, 4, seed=3, epoch=1, rank=0, world=2)
    r1 = rank_batches(12, 4, seed=3, epoch=1, rank=1, world=2)
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(b) for b in single]    # ranks split each batch
    assert all(s == item_seed(3, 1, i) for b in single for i, s in b)
    assert rank_batches(12, 4, seed=3, epoch=1, start=2) == single[2:]


def test_loss_decreases_and_run_folder(full_run):
    summary, run_dir = full_run
    assert summary["finished"] and summary["steps"] == summary["total_steps"] == 12
    rows = log_rows(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert list(rows[0]) == ["step", "epoch", "loss", "mse", "size", "lr", "weight_decay"]
    epoch_mse = [sum(float(r["mse"]) for r in rows if r["epoch"] == e) / 4 for e in ("0", "1", "2")]
    assert epoch_mse[2] < epoch_mse[1] < epoch_mse[0] and epoch_mse[2] < 0.7 * epoch_mse[0]
    assert float(rows[0]["lr"]) == 0.0 and float(rows[4]["lr"]) == pytest.approx(0.02)   # warm-up, then peak
    for name in ("config.yaml", "provenance.json", "checkpoint.pt", "loss_curve.png"):
        assert (run_dir / name).stat().st_size > 0, name


def test_checkpoint_holds_provenance_but_no_frozen_keys(full_run):
    _, run_dir = full_run
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", expected_kind="Toy")
    assert ckpt["kind"] == "Toy" and ckpt["step"] == 12 and ckpt["seed"] == 0 and ckpt["git_revision"]
    assert ckpt["config"]["lr"] == 0.02 and ckpt["config"]["hidden"] == 8
    assert ckpt["provenance"]["backbone"] == "toy-linear" and len(ckpt["provenance"]["weights_sha256"]) == 64
    assert not any(k.startswith("backbone.") for k in ckpt["trainable"])
    assert "head.0.weight" in ckpt["trainable"] and int(ckpt["trainable"]["seen"]) == 12   # buffers are kept
    method, cfg, _ = build_from_checkpoint(run_dir, ToyConfig, Toy)
    assert cfg.hidden == 8 and torch.equal(method.head[0].weight, ckpt["trainable"]["head.0.weight"])
    with pytest.raises(CheckpointError, match="other frozen parts.*weights_sha256"):   # another backbone
        build_from_checkpoint(run_dir, ToyConfig, lambda c: Toy(dataclasses.replace(c, seed=5)))


def test_interrupted_mid_epoch_then_resumed_equals_uninterrupted(full_run, tmp_path):
    full, full_dir = full_run
    stopped = train(tmp_path / "r", max_steps=6)                # epoch 1, batch 2 of 4
    assert stopped["steps"] == 6 and not stopped["finished"]
    resumed = train(tmp_path / "r", num_workers=1)              # a free key: the data does not depend on it
    assert resumed["steps"] == 12 and resumed["finished"]
    a, b = load_checkpoint(full_dir), load_checkpoint(tmp_path / "r")
    assert a["trainable"].keys() == b["trainable"].keys()
    for key in a["trainable"]:
        assert torch.equal(a["trainable"][key], b["trainable"][key]), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert log_rows(tmp_path / "r") == log_rows(full_dir)
    assert resumed["metrics"] == full["metrics"] and full["metrics"]["val_mse"] > 0    # the same final metrics
    epoch_end_metrics = [r for r in read_log(tmp_path / "r/metrics.csv") if r["step"] != "6"]   # 6: the stop
    assert epoch_end_metrics == read_log(full_dir / "metrics.csv")


def test_checkpoints_open_with_the_safe_loader_and_old_ones_only_with_consent(full_run, tmp_path):
    _, run_dir = full_run
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)   # no code can run
    np.random.seed(3)
    expected = np.random.rand(4)
    np.random.seed(3)
    saved = rng_state()
    np.random.rand(9)
    set_rng_state(saved)                                 # the tensor form restores numpy's generator exactly
    assert np.array_equal(np.random.rand(4), expected)
    state["rng"]["numpy"] = np.random.get_state()        # how checkpoints of an older nbseg stored it
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="safe loader refused.*--allow-unsafe-pickle"):
        load_checkpoint(tmp_path / "old.pt")
    allow_unsafe_pickle(True)
    try:
        assert load_checkpoint(tmp_path / "old.pt")["kind"] == "Toy"
    finally:
        allow_unsafe_pickle(False)


def test_resume_with_another_config_names_the_key(tmp_path):
    train(tmp_path / "r", max_steps=2)
    with pytest.raises(ConfigError, match=r"lr: saved 0\.02, now 0\.1.*new run folder"):
        train(tmp_path / "r", lr=0.1)


def test_other_kind_and_corrupt_checkpoints_are_clear_errors(full_run, tmp_path):
    _, run_dir = full_run
    with pytest.raises(CheckpointError, match="checkpoint of 'Toy', not of 'OtherToy'"):
        load_checkpoint(run_dir / "checkpoint.pt", expected_kind="OtherToy")
    (tmp_path / "o").mkdir()
    (tmp_path / "o/checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match="OtherToy"):
        train(tmp_path / "o", cls=OtherToy)
    bad = tmp_path / "bad.pt"
    bad.write_bytes((run_dir / "checkpoint.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cannot be read.*truncated"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"teacher": {}}, tmp_path / "dino.pt")
    with pytest.raises(CheckpointError, match="nbseg pretrain export"):
        load_checkpoint(tmp_path / "dino.pt")


def test_two_process_ddp_equals_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), half of every batch each, gives the single-process result."""
    overrides = ["epochs=1", "batch_size=8", "lr=0.02", "dropout=0", "log_every=1", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tests.test_train_loop", str(tmp_path / "ddp"), *overrides],
                          env=env, cwd=REPO, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "ddp/provenance.json").read_text())["world_size"] == 2
    cfg = load_config(ToyConfig, overrides=overrides)
    fit(Toy(cfg), ToyData(), cfg, tmp_path / "single", collate_fn=collate, progress=False)
    a, b = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "single")
    assert a["step"] == b["step"] == 4
    for key in a["trainable"]:
        torch.testing.assert_close(a["trainable"][key], b["trainable"][key], atol=1e-6, rtol=1e-5)
    for ra, rb in zip(log_rows(tmp_path / "ddp"), log_rows(tmp_path / "single"), strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)


if __name__ == "__main__":
    _cfg = load_config(ToyConfig, overrides=sys.argv[2:])
    fit(Toy(_cfg), ToyData(), _cfg, sys.argv[1], collate_fn=collate, progress=False)


class HookedToy(Toy):
    """Records the epoch hook (after the epoch's evaluation, with the optimiser) and skips every odd step."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("hooks", torch.zeros((), dtype=torch.long))

    def training_step(self, batch, step: int) -> dict[str, torch.Tensor]:
        out = super().training_step(batch, step)
        out["skip_step"] = torch.tensor(step % 2 == 1)
        return out

    def epoch_end(self, epoch: int, optimizer) -> None:
        assert isinstance(optimizer, torch.optim.Optimizer)
        self.hooks += 1


def test_epoch_hook_and_skipped_steps(tmp_path):
    cfg = toy_cfg(epochs=2, clip_grad=0.0, weight_decay=0.0, weight_decay_end=0.0)
    method = HookedToy(cfg)
    before = {k: v.clone() for k, v in method.head.state_dict().items()}
    seen = []

    def evaluate(m):
        seen.append(int(m.hooks))
        return validation_mse(m)

    summary = fit(method, ToyData(), cfg, tmp_path / "run", collate_fn=collate, progress=False, evaluate=evaluate)
    assert summary["steps"] == 8 and int(method.hooks) == 2 and seen == [0, 1]   # evaluation first, then the hook
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert int(state["trainable"]["hooks"]) == 2                                 # the checkpoint holds the hook's state
    # a skipped step leaves the weights as they were: a run whose every step is skipped does not move at all

    class AllSkipped(HookedToy):
        def training_step(self, batch, step):
            out = super().training_step(batch, step)
            out["skip_step"] = torch.tensor(True)
            return out

    still = AllSkipped(cfg)
    fit(still, ToyData(), cfg, tmp_path / "skipped", collate_fn=collate, progress=False)
    assert all(torch.equal(still.head.state_dict()[k], v) for k, v in before.items())
    assert any(not torch.equal(method.head.state_dict()[k], v) for k, v in before.items())
