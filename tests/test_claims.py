"""The claims table: the verdict rule, the runner's folder rules, and the smoke profile end to end on a tiny world
(table shape and columns, and a cached rerun that measures nothing; never the verdicts)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import nbseg.cli
from nbseg.claims import Claim, Measurement, judged, verdict
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
            "dcn/regions-follow-complexity"} | set(NEW_ROWS) <= keys
    for c in claims:
        assert c.paper_evidence.startswith("paper's") and c.protocol and c.averaging and c.variant, c.key
    for key, method in NEW_ROWS.items():                     # the later methods' rows judge by their own rule
        c = next(c for c in claims if c.key == key)
        assert c.method == method and c.judge is not None and c.rule.startswith(method)


NEW_ROWS = {"transfgu/top-down-beats-bottom-up": "transfgu", "pgseg/npr-improves-zero-shot": "pgseg",
            "san/reconstruction-prevents-collapse": "san"}


def _claim(key: str) -> Claim:
    return next(c for c in all_claims() if c.key == key)


def test_a_claims_own_rule_needs_two_seeds_and_a_known_verdict():
    with pytest.raises(ValueError, match="rule in words"):
        Claim(key="t/x", method="t", claim="c", paper_evidence="e", measure=lambda ctx, s: None, effect="e",
              judge=lambda values: "supported")
    claim = Claim(key="t/x", method="t", claim="c", paper_evidence="e", measure=lambda ctx, s: None, effect="e",
                  judge=lambda values: "supported" if values[0]["a"] > 0 else "maybe", rule="t: a > 0")
    assert judged(claim, [1.0], [{"a": 1.0}]) == ("inconclusive", "t: a > 0 (1 seeds); fewer than 2 seeds measured")
    assert judged(claim, [1.0, 1.0], [{"a": 1.0}, {"a": 1.0}]) == ("supported", "t: a > 0 (2 seeds)")
    with pytest.raises(ValueError, match="not one of"):
        judged(claim, [1.0, 1.0], [{"a": -1.0}, {"a": 1.0}])


def _transfgu_values(gain_full: float, one_round: float = 0.02) -> dict:
    """One seed's TransFGU values: k-means flat; the gap to k-means 0.04 (coarse), 0.06 (voc), 0.04 + gain_full."""
    out = {}
    for labels, extra in (("coarse", 0.0), ("voc", 0.02), ("full", gain_full)):
        out.update({f"{labels}: patch k-means": 0.30, f"{labels}: pseudo labels": 0.31,
                    f"{labels}: one round": 0.31 + one_round, f"{labels}: bootstrapped": 0.34 + extra})
    return out


def test_transfgu_row_applies_the_table3_rule():
    from nbseg.methods.transfgu.claims import stage_margins

    claim = _claim("transfgu/top-down-beats-bottom-up")
    grows = _transfgu_values(0.04)
    assert min(stage_margins(grows)) == pytest.approx(0.01)      # bootstrapped - one round on coarse
    assert claim.judge([grows, grows]) == "supported"
    assert claim.judge([_transfgu_values(0.01), _transfgu_values(0.01)]) == "not supported"   # gap shrinks at full
    flat = _transfgu_values(0.04, one_round=0.04)                 # one round above bootstrapped on coarse
    assert min(stage_margins(flat)) < 0 and claim.judge([flat, flat]) == "not supported"


def test_pgseg_row_applies_gain_over_the_seed_std():
    claim = _claim("pgseg/npr-improves-zero-shot")

    def seeds(*pairs):
        return [{"GroupViT alone": a, "+ I-NPR + T-NPR + HRS": b} for a, b in pairs]
    assert claim.judge(seeds((0.10, 0.15), (0.11, 0.16))) == "supported"           # gain 5 points, std 0.7
    assert claim.judge(seeds((0.10, 0.11), (0.14, 0.12))) == "inconclusive"        # gain -0.5, std 2.8
    assert claim.judge(seeds((0.15, 0.10), (0.16, 0.11))) == "not supported"


def test_san_row_applies_the_collapse_rule():
    claim = _claim("san/reconstruction-prevents-collapse")
    seed = {"full SAN": 0.60, "without reconstruction": 0.35, "raw-RGB k-means": 0.40, "random-CNN k-means": 0.45,
            "without reconstruction: collapsed": 1.0, "full SAN: collapsed": 0.0}
    assert claim.judge([seed, seed]) == "supported"
    assert claim.judge([seed, {**seed, "without reconstruction: collapsed": 0.0}]) == "not supported"
    assert claim.judge([seed, {**seed, "full SAN": 0.20}]) == "not supported"      # mean 0.40 < random-CNN 0.45


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
    frozen = ~table["method"].eq("san")                     # SAN trains from scratch: no pretrained model
    assert table.loc[frozen, "backbone"].str.contains("caption").all() and table["dataset"].str.contains("world").all()
    assert table.loc[~frozen, "backbone"].str.contains("no pretrained model").all()
    new = table.set_index("claim id").loc[list(NEW_ROWS)]
    assert (new["method"] == list(NEW_ROWS.values())).all() and new["rule"].str.contains("2 seeds").all()
    assert new["our measurement (mean ± std over seeds)"].str.contains("±").all() and new["effect mean"].notna().all()
    md = (out / CLAIMS_MD).read_text()
    assert all(f"**{method}**" in md for method in NEW_ROWS.values())
    assert "not DINO" in md and "Profile `smoke`, 2 seeds" in md and md.count("\n| **") == len(table)
    results = sorted((out / "results").rglob("seed*.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    csv = (out / CLAIMS_CSV).read_text()
    _, stats = run_claims(out, profile="smoke", seeds=2, data_root=str(tiny_world), progress=False)   # all cached
    assert stats["measured"] == 0 and stats["cached"] == len(results) == 2 * len(table)
    assert [p.stat().st_mtime_ns for p in results] == stamps and (out / CLAIMS_CSV).read_text() == csv


def test_claim_features_read_a_given_root_at_its_own_render_and_the_default_world_at_96_px(tmp_path, monkeypatch):
    import nbseg.world
    from nbseg.claims import ClaimContext

    small = write_world(tmp_path / "w48", WorldSpec(size=48, n_train=1, n_val=2), workers=1, progress=False)
    dataset, feats = ClaimContext(tmp_path / "c", data_root=str(small)).features("val", limit=1)
    assert tuple(dataset[0].image.shape[-2:]) == (48, 48) and tuple(feats.patches.shape[1:3]) == (6, 6)

    monkeypatch.setenv("NBSEG_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(nbseg.world, "default_spec",       # stands in for the 2,300-image default world
                        lambda size=None: WorldSpec(n_train=1, n_val=1, size=size or 96))
    dataset, _ = ClaimContext(tmp_path / "c2").features("val", limit=1)
    assert dataset.root == tmp_path / "data" / "world" and "96 px" in dataset.describe()
