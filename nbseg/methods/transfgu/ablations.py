"""TransFGU's ablations, as data: the paper's Table 5 (which bootstrapping losses; Pascal-VOC numbers beside them,
labelled as the paper's) and the released-versus-paper variant. ``nbseg ablate transfgu OUT --profile smoke|full``
runs them (:func:`nbseg.methods.workflow.run_ablations`, one resumable run folder each) into ``OUT/ablations.csv``.
The peer loss cannot be switched off by a weight (its CE term is the main loss): "ce" keeps alpha at 0 by starting
the bootstrapping after the last epoch."""
from __future__ import annotations

from nbseg.methods.base import Ablation
from nbseg.methods.transfgu.paper import PAPER_TABLE_5_VOC as T5

_NO_BOOTSTRAP = 10_000

ABLATIONS: dict[str, Ablation] = {
    "peer+unc+div": Ablation({}, "Table 5 (VOC): peer + unc + div", T5["peer+unc+div"]),
    "ce": Ablation({"uncertainty_weight": 0.0, "diversity_weight": 0.0, "bootstrap_start": _NO_BOOTSTRAP},
                   "Table 5 (VOC): CE", T5["ce"]),
    "peer": Ablation({"uncertainty_weight": 0.0, "diversity_weight": 0.0}, "Table 5 (VOC): peer", T5["peer"]),
    "peer+unc": Ablation({"diversity_weight": 0.0}, "Table 5 (VOC): peer + unc", T5["peer+unc"]),
    "peer+div": Ablation({"uncertainty_weight": 0.0}, "Table 5 (VOC): peer + div", T5["peer+div"]),
    "variant=paper": Ablation({"variant": "paper"}, "not reported (the paper's equations; released code is default)"),
}
SMOKE_ABLATIONS = ("peer+unc+div", "ce")
ABLATION_COLUMNS = {"variant": "variant", "steps": "steps", "student/miou": "student mIoU %",
                    "pseudo_labels/miou": "initial pseudo labels mIoU %", "kmeans/miou": "patch k-means mIoU %"}
PAPER_COLUMN = "paper mIoU % (Pascal-VOC, DINO ViT-S/8)"

__all__ = ["ABLATIONS", "SMOKE_ABLATIONS", "ABLATION_COLUMNS", "PAPER_COLUMN"]
