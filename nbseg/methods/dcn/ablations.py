"""DCN's ablations, as data: the number of prototypes k (the paper fixes k = 5, Sec. 4.1.2), the number of
prototype-updating stages, and the foreground rule of the region classification (the paper's head-minimum
attention with 2-means, against the head maximum its argument implies, the head mean, and no foreground
detection). The paper reports no ablation;
only the baseline has a paper number (Table 1, DCN + k-means, 47.1% on VOC with DINO ViT-S/8).

``nbseg ablate dcn OUT --profile smoke|full`` runs them (:func:`nbseg.methods.workflow.run_ablations`, one resumable
run folder each, ``OUT/<name>/run/``) and collects ``OUT/ablations.csv``.
"""
from __future__ import annotations

from nbseg.methods.base import Ablation
from nbseg.methods.dcn.paper import PAPER_TABLE_1
from nbseg.methods.dcn.regions import HEAD_RULES

_PAPER_DCN = PAPER_TABLE_1[-1][1]

ABLATIONS: dict[str, Ablation] = {
    "baseline": Ablation({}, "Table 1: DCN + k-means, k=5, 6 stages", _PAPER_DCN),
    "k=3": Ablation({"n_prototypes": 3}, "not reported (k=5 in the paper)"),
    "k=10": Ablation({"n_prototypes": 10}, "not reported (k=5 in the paper)"),
    "stages=3": Ablation({"n_stages": 3}, "not reported (6 stages in the paper)"),
    "foreground=max-head": Ablation({"foreground": "max-head"}, "not reported (head minimum in the paper's text)"),
    "foreground=mean-head": Ablation({"foreground": "mean-head"}, "not reported (head minimum in the paper)"),
    "foreground=all": Ablation({"foreground": "all"}, "not reported (2-means foreground in the paper)"),
}
SMOKE_ABLATIONS = ("baseline", "k=3", "foreground=all")
ABLATION_COLUMNS = {"n_prototypes": "k", "n_stages": "stages", "foreground": "foreground", "steps": "steps",
                    "table1/miou_mean": "DCN + k-means mIoU %",
                    "table1/miou_stego_mean": "DCN + k-means mIoU (STEGO avg) %",
                    **{f"table1/{rule}/miou_mean": f"DCN + k-means, foreground {rule}, mIoU %"
                       for rule in HEAD_RULES},
                    "baseline_patch_kmeans/miou_mean": "patch k-means mIoU %",
                    "table2/k=5/miou": "k-NN (k=5) mIoU %", "regions/mean": "regions per image",
                    "regions/foreground_fraction": "foreground fraction"}
PAPER_COLUMN = "paper mIoU % (VOC 2012 val, DINO ViT-S/8)"

__all__ = ["ABLATIONS", "SMOKE_ABLATIONS", "ABLATION_COLUMNS", "PAPER_COLUMN"]
