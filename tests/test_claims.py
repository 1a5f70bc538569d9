"""The claims table: the verdict rule, the runner's folder rules, and the smoke profile end to end on a tiny world
(table shape and columns, and a cached rerun that measures nothing; never the verdicts)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import nbseg.cli
from nbseg.claims import Claim, Measurement, verdict
from nbseg.claims.runner import CLAIMS_CSV, CLAIMS_MD, all_claims, result_path, run_claims
from nbseg.errors import ConfigError
from nbseg.world import WorldSpec, write_world

COLUMNS = ["claim id", "method", "claim", "paper's evidence (as reported by the paper)",
           "our measurement (mean ± std over seeds)", "effect", "effect mean", "effect std", "seeds",
           "per-seed effects", "backbone", "dataset", "protocol", "averaging", "variant", "verdict", "rule",
           "failures", "wall s", "cpu s"]


def test_verdict_rule():
    assert verdict([3.0, 3.2, 2.8])[0] == "supported"                 # mean 3, std 0.2: 3 - 0.4 > 0
    assert verdict([-3.0, -3.2, -2.8])[0] == "not supported"
    assert verdict([1.0, -1.0, 0.5])[0] == "inconclusive"             # the spread covers 0
    assert verdict([6.0, 6.1, 5.9], margin=5.0)[0] == "supported"
    assert verdict([4.0, 4.1, 3.9], margin=5.0)[0] == "not supported"  # clearly positive, but below the margin
    decided, rule = verdict([3.0])
    assert decided == "inconclusive" and "fewer than 2 seeds" in rule and "mean - 2 std > 0" in rule


def test_claim_keys_are_plain_relative_paths():
    with pytest.raises(ValueError, match="relative path"):
        Claim(key="../x", method="m", claim="c", paper_evidence="e", measure=lambda ctx, s: None, effect="e")


def test_every_builtin_claim_is_labelled():
    claims = all_claims()
    keys = {c.key for c in claims}
    assert {"alignseg/above-kmeans/official/hungarian", "alignseg/above-kmeans/paper/per-image",
            "alignseg/both-losses", "alignseg/two-local-crops", "alignseg/attention-threshold-per-image",
            "alignseg/local-crops-quality", "dcn/regions-above-patch-kmeans", "dcn/per-image-angles-intra",
            "dcn/regions-follow-complexity"} <= keys
    for c in claims:
        assert c.paper_evidence.startswith("paper's") and c.protocol and c.averaging and c.variant, c.key


def _toy(calls):
    def measure(ctx, seed):
        calls.append(seed)
        return Measurement(0.01 * (seed + 1), {"a": 0.5, "b": 0.5 - 0.01 * (seed + 1)}, "toy backbone", "toy data")
    return Claim(key="toy/claim", method="toy", claim="a beats b", paper_evidence="paper's nothing",
                 measure=measure, effect="a - b", protocol="p", averaging="a", variant="v")


def test_runner_caches_each_seed_and_refuses_foreign_folders(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("nbseg.claims.runner.all_claims", lambda methods=None: [_toy(calls)])
    table, stats = run_claims(tmp_path / "c", seeds=3, progress=False)
    assert calls == [0, 1, 2] and stats["measured"] == 3 and list(table.columns) == COLUMNS
    assert table["effect mean"].iloc[0] == pytest.approx(2.0) and table["seeds"].iloc[0] == 3
    assert json.loads(result_path(tmp_path / "c", _toy([]), 1).read_text())["effect"] == pytest.approx(0.02)
    _, stats = run_claims(tmp_path / "c", seeds=4, progress=False)     # more seeds: only the new one runs
    assert calls == [0, 1, 2, 3] and stats == {**stats, "measured": 1, "cached": 3}
    with pytest.raises(ConfigError, match="--overwrite"):
        run_claims(tmp_path / "c", profile="full", seeds=4, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "mine" / "results").mkdir()
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not empty"):
            run_claims(tmp_path / "mine", overwrite=overwrite, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and (tmp_path / "mine" / "results").is_dir()
    run_claims(tmp_path / "c", seeds=2, overwrite=True, progress=False)   # --overwrite measures again
    assert calls == [0, 1, 2, 3, 0, 1]


def test_a_failing_measurement_is_reported_and_retried(tmp_path, monkeypatch):
    def broken(ctx, seed):
        raise RuntimeError("no data")
    claim = Claim(key="toy/broken", method="toy", claim="c", paper_evidence="paper's", measure=broken, effect="e")
    monkeypatch.setattr("nbseg.claims.runner.all_claims", lambda methods=None: [claim])
    table, stats = run_claims(tmp_path / "c", seeds=2, progress=False)
    assert stats["failed"] == 2 and "no data" in table["failures"].iloc[0]
    assert table["verdict"].iloc[0] == "inconclusive" and not result_path(tmp_path / "c", claim, 0).exists()


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims_world") / "world"
    return write_world(root, WorldSpec(size=96, n_train=32, n_val=16), workers=1, progress=False)


def test_smoke_profile_end_to_end_and_cached_rerun(tiny_world, tmp_path):
    out = tmp_path / "claims"
    code = nbseg.cli.main(["claims", str(out), "--profile", "smoke", "--seeds", "2", "--data-root", str(tiny_world),
                           "--no-progress"])
    table = pd.read_csv(out / CLAIMS_CSV)
    assert code == 0, table["failures"].tolist()
    assert list(table.columns) == COLUMNS and len(table) == len(all_claims())
    assert (table["seeds"] == 2).all() and table["verdict"].isin(["supported", "not supported", "inconclusive"]).all()
    assert table["backbone"].str.contains("caption").all() and table["dataset"].str.contains("world").all()
    md = (out / CLAIMS_MD).read_text()
    assert "not DINO" in md and "Profile `smoke`, 2 seeds" in md and md.count("\n| **") == len(table)
    results = sorted((out / "results").rglob("seed*.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    csv = (out / CLAIMS_CSV).read_text()
    _, stats = run_claims(out, profile="smoke", seeds=2, data_root=str(tiny_world), progress=False)   # all cached
    assert stats["measured"] == 0 and stats["cached"] == len(results) == 2 * len(table)
    assert [p.stat().st_mtime_ns for p in results] == stamps and (out / CLAIMS_CSV).read_text() == csv
