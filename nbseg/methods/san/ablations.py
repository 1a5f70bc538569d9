"""SAN's ablations, as data: Table 5 (reconstruction, batch-wise semantics, token matcher) with the paper's
COCO-Stuff-3 accuracy beside each, and the switches of the paper's ambiguities (sigmoid p, the embedding form of the
consistency loss, the cosine or no orthogonality term). ``nbseg ablate san OUT`` runs them
(:func:`nbseg.methods.workflow.run_ablations`) and collects ``OUT/ablations.csv``.
"""
from __future__ import annotations

from nbseg.methods.base import Ablation
from nbseg.methods.san.paper import PAPER_TABLE_5

TABLE5_ABLATIONS = {
    "full": Ablation({}, "Table 5: full SAN", PAPER_TABLE_5["full SAN"]),
    "no_reconstruction": Ablation({"reconstruction": False}, "Table 5: without image reconstruction",
                                  PAPER_TABLE_5["without reconstruction"]),
    "no_token_matcher": Ablation({"token_matcher": "none"}, "Table 5: without token matcher",
                                 PAPER_TABLE_5["without token matcher"]),
    "per_image_semantics": Ablation({"semantics": "image"}, "Table 5: without batch-wise information",
                                    PAPER_TABLE_5["per-image semantics (without batch-wise)"]),
    "per_image_no_matcher": Ablation({"semantics": "image", "token_matcher": "none"},
                                     "Table 5: without batch-wise and token matcher",
                                     PAPER_TABLE_5["without batch-wise and token matcher"]),
}
ABLATIONS: dict[str, Ablation] = {
    **TABLE5_ABLATIONS,
    "sigmoid_matcher": Ablation({"token_matcher": "sigmoid"}, "not reported (Fig. 3c's legend: sigmoid)"),
    "embedding_consistency": Ablation({"consistency": "embedding"}, "not reported (Eq. 5 / 7 form)"),
    "cosine_orthogonality": Ablation({"orthogonality": "cosine"}, "not reported (\"a cosine similarity loss\")"),
    "no_orthogonality": Ablation({"orthogonality": "none"}, "not reported (the paper: no improvement from it)"),
}
SMOKE_ABLATIONS = ("full", "no_reconstruction")
ABLATION_COLUMNS = {"semantics": "semantics", "token_matcher": "matcher", "reconstruction": "reconstruction",
                    "steps": "steps", "san/batch/coarse/pixel_acc": "acc % (coarse, batch zeta)",
                    "san/batch/coarse/miou": "mIoU % (coarse, batch zeta)",
                    "san/memory/coarse/pixel_acc": "acc % (coarse, memory zeta)",
                    "san/batch/full/pixel_acc": "acc % (full, batch zeta)",
                    "san/batch/clusters_over_1pct": "clusters > 1%", "san/batch/effective_rank": "effective rank Q",
                    "model": "model"}
PAPER_COLUMN = "paper acc % (COCO-Stuff-3, as reported)"

__all__ = ["ABLATIONS", "TABLE5_ABLATIONS", "SMOKE_ABLATIONS", "ABLATION_COLUMNS", "PAPER_COLUMN"]
