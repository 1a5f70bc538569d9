"""PGSeg's Table-4 ablation as data: the same data, steps and seed with GroupViT alone (no NPR), + I-NPR, + T-NPR,
+ hard rejection (HRS), each under ``variant: paper``; ``official:...`` rows repeat the NPR rows with the released
code's behaviour (its confirmed bugs, :mod:`nbseg.methods.pgseg.model`). The paper's numbers are the Table-4 rows
derived from its stated gains (:mod:`nbseg.methods.pgseg.paper`), labelled as the paper's.

``nbseg ablate pgseg OUT --profile smoke|full`` runs them; ``benchmarks/pgseg.py`` adds seeds and the claim check
(:func:`nbseg.methods.pgseg.claims.table4_claim`).
"""
from __future__ import annotations

from nbseg.errors import ConfigError
from nbseg.methods.base import Ablation
from nbseg.methods.pgseg.model import VARIANTS
from nbseg.methods.pgseg.paper import PAPER_TABLE_4

_ROWS = list(PAPER_TABLE_4)
TABLE4 = {
    "groupvit": ({"inpr": False, "tnpr": False, "hard_rejection": False}, _ROWS[0]),
    "inpr": ({"inpr": True, "tnpr": False, "hard_rejection": False}, _ROWS[1]),
    "inpr+tnpr": ({"inpr": True, "tnpr": True, "hard_rejection": False}, _ROWS[2]),
    "inpr+tnpr+hrs": ({"inpr": True, "tnpr": True, "hard_rejection": True}, _ROWS[3]),
}
ABLATIONS: dict[str, Ablation] = {}
for _name, (_overrides, _row) in TABLE4.items():
    ABLATIONS[_name] = Ablation({**_overrides, "variant": "paper"}, f"Table 4: {_row}", PAPER_TABLE_4[_row])
    if _name != "groupvit":
        ABLATIONS[f"official:{_name}"] = Ablation({**_overrides, "variant": "official"},
                                                  f"Table 4: {_row} (released code)", PAPER_TABLE_4[_row])
SMOKE_ABLATIONS = ("groupvit", "inpr+tnpr+hrs", "official:inpr+tnpr+hrs")
ABLATION_COLUMNS = {"variant": "variant", "steps": "steps", "pgseg/full/miou": "zero-shot full mIoU %",
                    "pgseg/voc/miou": "zero-shot voc mIoU %", "pgseg/full/synonyms_miou": "synonyms full mIoU %",
                    "pgseg/compactness": "compactness", "pgseg/richness": "richness"}
PAPER_COLUMN = "paper mIoU % (VOC 2012 val, ViT-S/16, CC12M+RedCaps; derived from the stated gains)"



def table4_rows(variants=("paper",)) -> tuple[str, ...]:
    """Table 4's ablation names for ``variants``: GroupViT alone once (without NPR the variants do not differ),
    then the NPR rows of each variant (``official:`` names for the released behaviour)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown PGSeg variant(s) {unknown}: use {list(VARIANTS)}")
    rows = ["groupvit"]
    for variant in variants:
        rows += [name if variant == "paper" else f"{variant}:{name}" for name in TABLE4 if name != "groupvit"]
    return tuple(rows)


__all__ = ["table4_rows", "ABLATIONS", "SMOKE_ABLATIONS", "ABLATION_COLUMNS", "PAPER_COLUMN", "TABLE4"]
