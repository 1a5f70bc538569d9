"""AlignSeg's Table II ablations, as data: each one a config change and the paper's number for the same change
(PVOC, DINO ViT-S/16, from :data:`nbseg.methods.alignseg.paper.PAPER_TABLE_II`), plus a beta sweep, the paper
variant and DINO's saliency rule (not in the paper). The world runs at K = 10 while the paper's rows are at K = 5
(except the K rows), so the table compares differences to each side's own baseline, never absolute numbers.

``nbseg ablate alignseg OUT --profile smoke|full`` runs them through the library
(:func:`nbseg.methods.workflow.run_ablations`: one resumable run folder each, ``OUT/<name>/10_alignseg/``, the folder
the earlier notebook batch wrote, so its runs are found and resumed) and collects one table, ``OUT/table_ii.csv``.
:func:`table_ii_sets` gives the same ablations as parameters of notebook ``10_alignseg``, to rerun one by hand.
"""
from __future__ import annotations

from pathlib import Path

from nbseg.methods import workflow
from nbseg.methods.alignseg.paper import PAPER_TABLE_II
from nbseg.methods.base import Ablation, get_method

NOTEBOOK = "10_alignseg"
RUN_FOLDER = NOTEBOOK
TABLE_CSV = "table_ii.csv"
PAPER_COLUMN = "paper mIoU % (PVOC, DINO ViT-S/16)"
_A, _B, _C = PAPER_TABLE_II["a"], PAPER_TABLE_II["b"], PAPER_TABLE_II["c"]

# The world runs use K = 10 (the world config); the paper's rows (a)-(c) vary K = 5 except the K rows. Absolute
# numbers are never comparable (other backbone, other data): the table compares each row's difference to our
# baseline with the paper's difference to its own baseline (``paper_baseline``: 69.5 at K = 5, 73.2 at K = 10).
_K5, _K10 = _A["L=1 K=5 v_l=2"], _A["L=1 K=10 v_l=2"]
_NO_BETA = "not reported (the paper never states beta)"

TABLE_II: dict[str, Ablation] = {
    "baseline": Ablation({}, "(a) L=1 K=10 v_l=2", _K10, paper_baseline=_K10),
    "L=3": Ablation({"n_layers": 3}, "(a) L=3 K=5 v_l=2 (vs 69.5 at L=1)", _A["L=3 K=5 v_l=2"], paper_baseline=_K5),
    "v_l=1": Ablation({"n_local": 1}, "(a) L=1 K=5 v_l=1 (vs 69.5 at v_l=2)", _A["L=1 K=5 v_l=1"], paper_baseline=_K5),
    "v_l=3": Ablation({"n_local": 3}, "(a) L=1 K=5 v_l=3 (vs 69.5 at v_l=2)", _A["L=1 K=5 v_l=3"], paper_baseline=_K5),
    "K=5": Ablation({"n_prototypes": 5}, "(a) L=1 K=5 v_l=2 (vs 73.2 at K=10)", _K5, paper_baseline=_K10),
    "K=15": Ablation({"n_prototypes": 15}, "(a) L=1 K=15 v_l=2 (vs 73.2 at K=10)", _A["L=1 K=15 v_l=2"],
                     paper_baseline=_K10),
    "L_corr only": Ablation({"alpha": 0.0}, "(b) L_corr only (vs 69.5 with both)", _B["L_corr only"],
                            paper_baseline=_K5),
    "L_proto only": Ablation({"beta": 0.0}, "(b) L_proto only (vs 69.5 with both)", _B["L_proto only"],
                             paper_baseline=_K5),
    # the smoke profile trains on 64 images in batches of 16: x4 is 64 there
    "batch x4": Ablation({"batch_size": 128}, "(c) batch 128, 10 epochs (vs 69.5 at 32)", _C["batch 128, 10 epochs"],
                         smoke_overrides={"batch_size": 64}, paper_baseline=_K5),
    "epochs x5": Ablation({}, "(c) batch 32, 50 epochs (vs 69.5 at 10)", _C["batch 32, 50 epochs"], epoch_scale=5,
                          paper_baseline=_K5),
    # beta sweep (not in the paper): at alpha = beta = 1 the paper variant's L_corr has ~1/40 of L_proto's gradient
    # at initialisation (benchmarks/alignseg_grad_balance.py), so it trains on L_proto alone in effect
    "beta=0.3": Ablation({"beta": 0.3}, _NO_BETA),
    "beta=3": Ablation({"beta": 3.0}, _NO_BETA),
    "beta=10": Ablation({"beta": 10.0}, _NO_BETA),
    "paper variant": Ablation({"variant": "paper"}, _NO_BETA),
    "paper variant, beta=10": Ablation({"variant": "paper", "beta": 10.0}, _NO_BETA),
    "paper variant, beta=30": Ablation({"variant": "paper", "beta": 30.0}, _NO_BETA),
    "saliency=dino": Ablation({"saliency": "dino"}, "not reported (the paper: \"exactly as DINO\"; the release "
                                                    "blurs and drops small components)"),
}
SMOKE_SETS = ("baseline", "L_corr only", "L_proto only")
DELTA_COLUMN = "AlignSeg per-image (released path) %"
# Column names say the protocol, the label path and the averaging (hungarian: STEGO's, beside the paper's numbers).
TABLE_COLUMNS = {"variant": "variant", "K": "K", "L": "L", "v_l": "v_l", "alpha": "alpha", "beta": "beta",
                 "saliency": "saliency", "epochs": "epochs", "batch_size": "batch_size", "steps": "steps",
                 "alignseg/hungarian/miou_stego": "AlignSeg hungarian (STEGO avg) %",
                 "alignseg/per-image/miou": "AlignSeg per-image (nbseg path) %",
                 "alignseg/per-image-released/miou": DELTA_COLUMN,
                 "per-image k-means/hungarian/miou_stego": "per-image k-means hungarian (STEGO avg) %",
                 "dataset k-means/hungarian/miou_stego": "dataset k-means hungarian (STEGO avg) %"}


def table_ii_sets(names=None, *, smoke: bool = False) -> dict[str, dict]:
    """The ablations ``names`` (default: all, or :data:`SMOKE_SETS` with ``smoke``) as parameters of notebook
    ``10_alignseg`` (``OVERRIDES`` and ``EPOCH_SCALE``)."""
    spec = get_method("alignseg")
    sets = {}
    for name in workflow.ablation_names(spec, names, smoke=smoke):
        a = TABLE_II[name]
        overrides = {**a.overrides, **(a.smoke_overrides if smoke else {})}
        sets[name] = ({"OVERRIDES": overrides} if overrides else {}) | (
            {"EPOCH_SCALE": a.epoch_scale} if a.epoch_scale != 1 else {})
    return sets


def collect_table_ii(out_dir: str | Path, names):
    """One row per ablation of ``out_dir``: its settings, AlignSeg's mIoU under both protocols (%), the k-means
    baselines, and the paper's number for the same change (:func:`nbseg.methods.workflow.collect_ablations`)."""
    return workflow.collect_ablations(get_method("alignseg"), out_dir, names)


def run_table_ii(out_dir: str | Path, names=None, *, profile: str = "smoke", overrides: dict | None = None,
                 config: str | Path | None = None, progress: bool = True):
    """Run the Table II ablations ``names`` with ``overrides`` common to all (e.g. ``{"weights": PATH}``), each in
    ``out_dir/<name>/10_alignseg/``, and collect ``out_dir/table_ii.csv`` (returned as a DataFrame). A failing run
    does not stop the others; it is reported in the table's ``status`` column."""
    return workflow.run_ablations(get_method("alignseg"), out_dir, names, profile=profile, config=config,
                                  overrides=overrides, progress=progress)


__all__ = ["TABLE_II", "SMOKE_SETS", "DELTA_COLUMN", "TABLE_COLUMNS", "PAPER_COLUMN", "table_ii_sets",
           "collect_table_ii", "run_table_ii"]
