"""What a claim of the claims table is, how it is measured and how its verdict is reached.

A :class:`Claim` is one row of the table: a paper's central claim in a sentence, the paper's own evidence (labelled
as the paper's), and ``measure(ctx, seed) -> Measurement``, the experiment that tests it once for one seed on the
backbone and data the :class:`ClaimContext` names. A measurement gives the quantities compared (``values``) and
one number, the ``effect``, that is positive when the claim holds (e.g. "AlignSeg mIoU - the best k-means mIoU").

:func:`verdict` turns the effects of several seeds into supported / not supported / inconclusive with one rule,
stated in every row: with m the mean and s the standard deviation (ddof 1) of the per-seed effects and ``margin``
the smallest effect that counts (0 unless the claim says otherwise),

* supported      if m - 2 s > margin (the effect clears the margin by two seed spreads);
* not supported  if m + 2 s < margin (it stays below the margin by two seed spreads);
* inconclusive   otherwise, or with fewer than 2 seeds (no spread to judge by).

A claim whose paper (or issue) names its own rule (TransFGU: every stage beats the last and the gap to k-means grows;
PGSeg: the gain exceeds the seed std) carries it as ``judge`` + ``rule`` (:func:`judged`): the method's verdict
function, the one its benchmark applies, on the per-seed values; below 2 seeds it is inconclusive too.

Methods add their rows through ``MethodSpec.claims`` (:mod:`nbseg.methods.base`); :mod:`nbseg.claims.runner` runs
them, caches each (claim, seed) result and writes the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

PROFILES = ("smoke", "full")
VERDICTS = ("supported", "not supported", "inconclusive")


@dataclass
class Measurement:
    """One seed's result: ``effect`` (positive = the claim holds), the ``values`` compared (``{label: number}``, in
    the claim's ``unit``), the ``backbone`` (its description, with how it was trained) and the ``dataset`` scored."""

    effect: float
    values: Mapping[str, float]
    backbone: str
    dataset: str

    def to_dict(self) -> dict:
        return {"effect": float(self.effect), "values": {k: float(v) for k, v in self.values.items()},
                "backbone": self.backbone, "dataset": self.dataset}


@dataclass(frozen=True)
class Claim:
    """One row of the claims table.

    Fields:
        key: unique, file-safe id (``"alignseg/above-kmeans/official/hungarian"``): the cache folder of its results.
        method: the registered method whose paper makes the claim.
        claim: the claim, in a sentence.
        paper_evidence: the paper's own evidence (table, numbers, setting), worded as the paper's.
        measure: ``(ctx, seed) -> Measurement``: the experiment, once, for one seed.
        effect: what the effect is (``"AlignSeg - max(k-means), mIoU points"``).
        unit: the unit of ``values`` and ``effect`` as shown (``"mIoU %"``, ``"degrees"``, ``"Spearman rho"``).
        scale: ``values`` and ``effect`` are multiplied by it in the table (100 for fractions shown in %).
        protocol / averaging / variant: how the numbers were scored and which form of the method ran.
        margin: the smallest effect (in the shown unit) that supports the claim; see :func:`verdict`.
        judge / rule: the paper-specific verdict rule, where the claim names one (TransFGU's "each stage beats the
            last and the gap grows"): ``judge(per-seed values, unscaled) -> verdict`` applied to 2+ seeds, and
            ``rule`` the rule in words; without them :func:`verdict` judges the effects against ``margin``.
    """

    key: str
    method: str
    claim: str
    paper_evidence: str
    measure: Callable[["ClaimContext", int], Measurement]
    effect: str
    unit: str = "mIoU %"
    scale: float = 100.0
    protocol: str = ""
    averaging: str = ""
    variant: str = ""
    margin: float = 0.0
    judge: Callable[[list[Mapping[str, float]]], str] | None = None
    rule: str = ""

    def __post_init__(self):
        if self.judge is not None and not self.rule:
            raise ValueError(f"claim {self.key!r}: a judge needs its rule in words (rule=...)")
        if not self.key or any(c in self.key for c in " \\:*?\"<>|") or self.key.startswith("/") or ".." in self.key:
            raise ValueError(f"claim key {self.key!r} must be a non-empty relative path of plain names")


def judged(claim: Claim, effects, values) -> tuple[str, str]:
    """(verdict, rule) of ``claim`` from its per-seed ``effects`` (shown unit) and ``values`` (unscaled): its own
    ``judge`` where it has one (inconclusive below 2 seeds, as :func:`verdict`), else :func:`verdict`."""
    if claim.judge is None:
        return verdict(effects, claim.margin)
    rule = f"{claim.rule} ({len(values)} seeds)"
    if len(values) < 2:
        return "inconclusive", rule + "; fewer than 2 seeds measured"
    decided = claim.judge(list(values))
    if decided not in VERDICTS:
        raise ValueError(f"claim {claim.key!r}: its judge returned {decided!r}, not one of {VERDICTS}")
    return decided, rule


def verdict(effects, margin: float = 0.0) -> tuple[str, str]:
    """(verdict, the rule as text) for per-seed ``effects`` (already in the shown unit); see the module docstring."""
    values = np.asarray([e for e in effects if e is not None and not math.isnan(e)], dtype=np.float64)
    rule = (f"supported if mean - 2 std > {margin:g}; not supported if mean + 2 std < {margin:g}; else inconclusive "
            f"(std over {values.size} seeds, ddof 1)")
    if values.size < 2:
        return "inconclusive", rule + "; fewer than 2 seeds measured"
    mean, std = float(values.mean()), float(values.std(ddof=1))
    if mean - 2 * std > margin:
        return "supported", rule
    if mean + 2 * std < margin:
        return "not supported", rule
    return "inconclusive", rule


@dataclass
class ClaimContext:
    """What every measurement shares in one ``nbseg claims`` run.

    ``out_dir``: the claims folder (run folders go to ``out_dir/runs/...``, feature caches to
    ``out_dir/feature_cache``); ``profile``: ``"smoke"`` (tiny runs, tests) or ``"full"``; ``data_root``: the
    world's root (None: the default world); ``backbone_name`` / ``weights``: the frozen backbone every claim uses
    (default: the embedded one). :meth:`memo` keeps results several claims share (a trained model's scores, the
    features of the evaluation split) for the rest of the run.
    """

    out_dir: Path
    profile: str = "smoke"
    data_root: str | None = None
    backbone_name: str = "embedded"
    weights: str | None = None
    progress: bool = False
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        self.out_dir = Path(self.out_dir)

    def memo(self, key: Any, compute: Callable[[], Any], *, seed: int | None = None) -> Any:
        """``compute()`` once per ``key`` for the rest of the run, or (``seed``) until :meth:`end_seed` of it."""
        store = self._memo.setdefault(("seed", seed), {}) if seed is not None else self._memo
        if key not in store:
            store[key] = compute()
        return store[key]

    def end_seed(self, seed: int) -> None:
        """Forget what was memoised for ``seed`` (crop caches, trained models' scores): frees memory."""
        self._memo.pop(("seed", seed), None)

    def backbone(self):
        """The frozen backbone every claim measures (loaded once)."""
        from nbseg.backbones import load

        return self.memo("backbone", lambda: load(self.backbone_name, self.weights))

    def features(self, split: str = "val", *, labels: str = "voc", limit: int | None = None):
        """Frozen features (:class:`nbseg.features.FeatureSet`) of the first ``limit`` images of the world's
        ``split`` with the label set ``labels``, at the default world's training render (96 px) or a given root's
        own; extracted once per run and shared by every claim that asks for the same ones. Returns (dataset, features)."""
        from nbseg.features import extract_dataset
        from nbseg.probes.basics import open_dataset
        from nbseg.world import TRAIN_SIZE

        def compute():
            # the default world's training render (96 px): the methods these features are compared with train and
            # score there; a given root is read as it was rendered
            size = None if self.data_root is not None else TRAIN_SIZE
            dataset = open_dataset("world", self.data_root, split, labels=labels, world_size=size)
            return dataset, extract_dataset(self.backbone(), dataset, limit=limit, progress=False)

        return self.memo(("features", split, labels, limit), compute)

    def run_dir(self, *parts: str) -> Path:
        """``out_dir/runs/<parts>``: a training run's folder (resumable; a finished run is only loaded)."""
        return self.out_dir.joinpath("runs", *parts)

    def data_overrides(self, *, backbone: bool = True) -> dict:
        """Config keys every method's run takes from the context (the data root, the backbone; ``backbone=False``:
        the data root only, for methods that train their own encoder, such as PGSeg and SAN)."""
        out = {"backbone": self.backbone_name, "weights": self.weights} if backbone else {}
        if self.data_root is not None:
            out["data_root"] = self.data_root
        return out

    def pick(self, settings: Mapping[str, Mapping]) -> Mapping:
        """``settings[profile]``: a claim module's per-profile sizes."""
        return settings[self.profile]


__all__ = ["Claim", "ClaimContext", "Measurement", "verdict", "judged", "PROFILES", "VERDICTS"]
