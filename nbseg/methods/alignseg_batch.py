"""AlignSeg's Table II ablations as a papermill batch of notebook ``10_alignseg``, collected into one table.

Each ablation is one set of notebook parameters (:data:`TABLE_II_SETS`: L, K, v_l, the loss terms, batch size and
epochs), run headless through :func:`nbseg.notebook_runner.run_notebooks` into ``OUT/<name>/10_alignseg/``; the
``metrics.json`` files are then read into one DataFrame (``OUT/table_ii.csv``) beside the paper's number for the
same change (PVOC, DINO ViT-S/16; labelled as the paper's). Runs are resumable: a rerun resumes every run folder
(a finished one is only evaluated again). ``nbseg ablate alignseg OUT --profile smoke|full`` is the command.
"""
from __future__ import annotations

import json
from pathlib import Path

from nbseg.errors import ConfigError

NOTEBOOK = "10_alignseg"
TABLE_CSV = "table_ii.csv"

# name -> (notebook parameters, the paper's Table II row for the same change, its mIoU % on PVOC)
TABLE_II_SETS: dict[str, tuple[dict, str, float]] = {
    "baseline": ({}, "(a) L=1 K=10 v_l=2", 73.2),
    "L=3": ({"OVERRIDES": {"n_layers": 3}}, "(a) L=3 K=5 v_l=2 (vs 69.5 at L=1)", 69.6),
    "v_l=1": ({"OVERRIDES": {"n_local": 1}}, "(a) L=1 K=5 v_l=1 (vs 69.5 at v_l=2)", 66.9),
    "v_l=3": ({"OVERRIDES": {"n_local": 3}}, "(a) L=1 K=5 v_l=3 (vs 69.5 at v_l=2)", 69.5),
    "K=5": ({"OVERRIDES": {"n_prototypes": 5}}, "(a) L=1 K=5 v_l=2", 69.5),
    "K=15": ({"OVERRIDES": {"n_prototypes": 15}}, "(a) L=1 K=15 v_l=2", 73.3),
    "L_corr only": ({"OVERRIDES": {"alpha": 0.0}}, "(b) L_corr only (vs 69.5 with both)", 66.4),
    "L_proto only": ({"OVERRIDES": {"beta": 0.0}}, "(b) L_proto only (vs 69.5 with both)", 29.5),
    "batch x4": ({"OVERRIDES": {"batch_size": 128}}, "(c) batch 128, 10 epochs (vs 69.5 at 32)", 68.0),
    "epochs x5": ({"EPOCH_SCALE": 5}, "(c) batch 32, 50 epochs (vs 69.5 at 10)", 69.8),
}
SMOKE_SETS = ("baseline", "L_corr only", "L_proto only")
PAPER_COLUMN = "paper mIoU % (PVOC, DINO ViT-S/16)"


def table_ii_sets(names=None, *, smoke: bool = False) -> dict[str, dict]:
    """The notebook parameters of the ablations ``names`` (default: all, or :data:`SMOKE_SETS` with ``smoke``)."""
    names = list(names) if names else list(SMOKE_SETS if smoke else TABLE_II_SETS)
    unknown = [n for n in names if n not in TABLE_II_SETS]
    if unknown:
        raise ConfigError(f"unknown Table II ablation(s) {unknown}; choose from {list(TABLE_II_SETS)}")
    sets = {n: dict(TABLE_II_SETS[n][0]) for n in names}
    if smoke and "batch x4" in sets:              # the smoke profile trains on 64 images in batches of 16
        sets["batch x4"] = {"OVERRIDES": {"batch_size": 64}}
    return sets


def collect_table_ii(out_dir: str | Path, names) -> "object":
    """One row per ablation: its parameters, what produced it, AlignSeg's mIoU under both protocols (%), the
    k-means baselines, and the paper's number for the same change. A run without ``metrics.json`` gets a row with
    ``status`` saying so."""
    import pandas as pd

    rows = []
    for name in names:
        params, paper_row, paper_value = TABLE_II_SETS[name]
        path = Path(out_dir) / name / NOTEBOOK / "metrics.json"
        row = {"ablation": name, "parameters": json.dumps(params, sort_keys=True)}
        if path.is_file():
            m = json.loads(path.read_text())
            row.update({"status": "ok", "variant": m.get("variant"), "K": m.get("K"), "L": m.get("L"),
                        "v_l": m.get("v_l"), "epochs": m.get("epochs"), "batch_size": m.get("batch_size"),
                        "steps": m.get("steps")})
            for key, column in (("alignseg/hungarian/miou", "AlignSeg hungarian %"),
                                ("alignseg/per-image/miou", "AlignSeg per-image %"),
                                ("per-image k-means/hungarian/miou", "per-image k-means hungarian %"),
                                ("dataset k-means/hungarian/miou", "dataset k-means hungarian %")):
                row[column] = 100 * m[key] if m.get(key) is not None else None
            row.update({"backbone": m.get("backbone"), "dataset": m.get("dataset"), "smoke": m.get("smoke")})
        else:
            row["status"] = f"no metrics.json at {path}"
        row.update({"paper row": paper_row, PAPER_COLUMN: paper_value})
        rows.append(row)
    return pd.DataFrame(rows)


def run_table_ii(out_dir: str | Path, names=None, *, profile: str = "smoke", parameters: dict | None = None,
                 notebooks_dir: str | Path | None = None, timeout: float | None = None) -> "object":
    """Run notebook ``10_alignseg`` once per ablation (``names``, see :func:`table_ii_sets`) with ``parameters``
    common to all (e.g. ``{"WEIGHTS": PATH}``; figures are off unless ``FIGURES`` is given), each into
    ``out_dir/<name>/``, then collect the table into ``out_dir/table_ii.csv`` and return it. A failing run does
    not stop the others; it is reported in the table's ``status`` column."""
    from nbseg.io import atomic_write_text
    from nbseg.notebook_runner import NotebookFailure, find_notebooks, run_notebooks

    out_dir = Path(out_dir)
    sets = table_ii_sets(names, smoke=profile == "smoke")
    notebook = find_notebooks([NOTEBOOK], notebooks_dir)
    common = {"FIGURES": False, **(parameters or {})}
    failures = {}
    for name, params in sets.items():
        merged = {**common, **params}
        if "OVERRIDES" in common and "OVERRIDES" in params:
            merged["OVERRIDES"] = {**common["OVERRIDES"], **params["OVERRIDES"]}
        print(f"Table II ablation {name!r}: {json.dumps(params, sort_keys=True)}", flush=True)
        try:
            run_notebooks(notebook, profile, merged, out_dir / name, timeout)
        except NotebookFailure as err:
            failures[name] = str(err)
    table = collect_table_ii(out_dir, list(sets))
    for name, reason in failures.items():
        table.loc[table["ablation"] == name, "status"] = f"failed: {reason.splitlines()[-1].strip()}"
    atomic_write_text(out_dir / TABLE_CSV, table.to_csv(index=False))
    return table


__all__ = ["TABLE_II_SETS", "SMOKE_SETS", "table_ii_sets", "collect_table_ii", "run_table_ii"]
