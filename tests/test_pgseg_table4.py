"""PGSeg's Table 4 in both variants: the row names per variant, every summary row labelled with its variant, and a
verdict per variant against the shared GroupViT-alone row (hand-made runs, no training)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from nbseg.errors import ConfigError
from nbseg.methods import get_method
from nbseg.methods.pgseg.ablations import table4_rows
from nbseg.methods.pgseg.claims import collect_table4, summarise, variant_verdicts


def test_rows_per_variant_exist_in_the_ablations():
    assert table4_rows() == ("groupvit", "inpr", "inpr+tnpr", "inpr+tnpr+hrs")
    both = table4_rows(("paper", "official"))
    assert both[:4] == table4_rows() and both[4:] == ("official:inpr", "official:inpr+tnpr", "official:inpr+tnpr+hrs")
    ablations = get_method("pgseg").ablations
    assert set(both) <= set(ablations)
    assert {ablations[n].overrides["variant"] for n in both[4:]} == {"official"}
    with pytest.raises(ConfigError, match="use \\['paper', 'official'\\]"):
        table4_rows(("released",))


def runs_table():
    """Full mIoU per seed: the paper variant's full row gains 3 points (std ~1), the official one loses 1."""
    rows = []
    for name, variant, values in (("groupvit", "paper", (10, 11, 12)), ("inpr+tnpr+hrs", "paper", (13, 14, 15)),
                                  ("official:inpr+tnpr+hrs", "official", (9, 10, 11))):
        rows += [{"ablation": name, "seed": s, "variant": variant, "full mIoU %": v, "voc mIoU %": v / 2}
                 for s, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_summary_rows_name_their_variant_and_each_variant_gets_a_verdict():
    runs = runs_table()
    summary = summarise(runs)
    assert list(summary["ablation"]) == ["groupvit", "inpr+tnpr+hrs", "official:inpr+tnpr+hrs"]
    assert list(summary["variant"]) == ["paper", "paper", "official"]
    assert list(summary["full mIoU % mean"]) == [11, 14, 10] and (summary["seeds"] == 3).all()
    v = variant_verdicts(runs, ("groupvit", "inpr+tnpr+hrs", "official:inpr+tnpr+hrs"))
    assert set(v) == {"full", "voc", "official/full", "official/voc"}
    assert v["full"] == {"gain": 3.0, "std": 1.0, "supported": True}
    assert v["official/full"]["gain"] == -1.0 and not v["official/full"]["supported"]
    assert v["voc"]["gain"] == 1.5 and v["voc"]["std"] == 0.5 and v["voc"]["supported"]


def test_collect_reads_finished_runs_and_names_a_missing_one(tmp_path):
    for name, variant, base in (("groupvit", "paper", 0.10), ("official:inpr+tnpr+hrs", "official", 0.12)):
        for seed in (0, 1):
            run = tmp_path / name / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps(
                {"variant": variant, "steps": 48, "pgseg/full/miou": base + seed / 100, "pgseg/voc/miou": base,
                 "pgseg/compactness": 0.8}))
    result = collect_table4(tmp_path, seeds=(0, 1), ablations=("groupvit", "official:inpr+tnpr+hrs"))
    assert list(result.runs["variant"]) == ["paper", "paper", "official", "official"]
    assert result.runs["full mIoU %"].tolist() == pytest.approx([10, 11, 12, 13])      # fractions -> percent
    assert result.runs["compactness"].tolist() == [0.8] * 4
    assert set(result.verdict) == {"official/full", "official/voc"}
    assert result.verdict["official/full"]["gain"] == pytest.approx(2.0)
    with pytest.raises(FileNotFoundError, match="seed 2 first"):
        collect_table4(tmp_path, seeds=(0, 1, 2), ablations=("groupvit",))


def test_worker_processes_give_the_sequential_table(tmp_path):
    """``jobs=2`` trains the (ablation, seed) runs in two processes and collects the same table as one process."""
    from nbseg.methods.pgseg import SMOKE_PROFILE
    from nbseg.methods.pgseg.claims import table4_claim

    rows = ("groupvit", "inpr+tnpr+hrs")
    kwargs = {"seeds": (0,), "ablations": rows, "overrides": {**SMOKE_PROFILE, "train_limit": 8}, "eval_limit": 4}
    one = table4_claim(tmp_path / "one", **kwargs)
    two = table4_claim(tmp_path / "two", jobs=2, **kwargs)
    assert all((tmp_path / "two" / name / "seed0" / "metrics.json").exists() for name in rows)
    cols = ["ablation", "seed", "variant", "steps", "full mIoU %", "voc mIoU %", "compactness"]
    pd.testing.assert_frame_equal(one.runs[cols], two.runs[cols])
    assert one.verdict == two.verdict
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        table4_claim(tmp_path / "three", jobs=0, **kwargs)
