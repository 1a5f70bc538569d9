"""DCN (Li et al. 2022, "Dynamic Clustering Network for Unsupervised Semantic Segmentation"), registered as ``dcn``.

* :mod:`~nbseg.methods.dcn.model` - config, decoder (Eq. 1-4), assignments (Eq. 5-6), the model, its data (cached
  features of :mod:`nbseg.features.cache`).
* :mod:`~nbseg.methods.dcn.losses` - the modularity loss, Eq. (7)-(10), as pure tensor functions.
* :mod:`~nbseg.methods.dcn.regions` - region embeddings, foreground detection, Tables 1-2, region counts.
* :mod:`~nbseg.methods.dcn.evaluation` - the paper's evaluation and the notebook's workflows;
  :mod:`~nbseg.methods.dcn.figures` - figures and the region explorer.
* :mod:`~nbseg.methods.dcn.ablations` - k, stages, foreground rule; :mod:`~nbseg.methods.dcn.paper` - the numbers.
* :mod:`~nbseg.methods.dcn.claims` - the paper's central claims as rows of ``nbseg claims``.
* ``nbseg/configs/dcn_{world,voc}.yaml`` - the shipped configs.
"""
from pathlib import Path

from nbseg.methods.base import MethodSpec, PaperNumbers, register
from nbseg.methods.dcn.ablations import ABLATION_COLUMNS, ABLATIONS, PAPER_COLUMN, SMOKE_ABLATIONS
from nbseg.methods.dcn.claims import dcn_claims
from nbseg.methods.dcn.evaluation import SMOKE_PROFILE, SMOKE_VAL_LIMIT, evaluate_dcn
from nbseg.methods.dcn.figures import evaluation_figures
from nbseg.methods.dcn.model import (DCN, DCNConfig, DCNDecoder, PrototypeAttention, UpdateBlock, count_regions,
                                     feature_cache, hard_assignment, open_split, soft_assignment, training_dataset)
from nbseg.methods.dcn.paper import PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_1, PAPER_TABLE_2

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _evaluate(model: DCN, *, split: str | None = None, limit: int | None = None, kmeans: bool = True,
              progress: bool = True):
    """DCN's Tables 1-2 and region counts (``kmeans`` is DCN's own Table 1, always computed)."""
    return evaluate_dcn(model, split=split or "val", val_limit=limit, progress=progress)


SPEC = register(MethodSpec(
    name="dcn",
    title="DCN (Li et al. 2022)",
    config_class=DCNConfig,
    model_class=DCN,
    configs={name: CONFIGS / f"dcn_{name}.yaml" for name in ("world", "voc")},
    training_dataset=lambda cfg, model, progress=True: training_dataset(cfg, model.backbone, progress=progress),
    evaluate=_evaluate,
    figures=evaluation_figures,
    smoke=SMOKE_PROFILE,
    smoke_eval_limit=SMOKE_VAL_LIMIT,
    ablations=ABLATIONS,
    smoke_ablations=SMOKE_ABLATIONS,
    ablation_columns=ABLATION_COLUMNS,
    paper=PaperNumbers(source=PAPER_SOURCE, setting=f"{PAPER_SETTING['dataset']}, {PAPER_SETTING['encoder']}",
                       values={**{f"table_1/{name}": v for name, v, _ in PAPER_TABLE_1},
                               **{f"table_2/k={k}/miou": v[0] for k, v in PAPER_TABLE_2.items()}}),
    paper_column=PAPER_COLUMN,
    claims=dcn_claims,
))

__all__ = ["SPEC", "DCN", "DCNConfig", "DCNDecoder", "UpdateBlock", "PrototypeAttention", "soft_assignment",
           "hard_assignment", "count_regions", "open_split", "feature_cache", "training_dataset"]
