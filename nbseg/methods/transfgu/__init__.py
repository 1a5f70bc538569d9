"""TransFGU (Yin et al., ECCV 2022), registered as ``transfgu``.

* :mod:`~nbseg.methods.transfgu.model` - config, Segmenter decoder (Eq. 2), the model and its bootstrapping rounds.
* :mod:`~nbseg.methods.transfgu.bank` - crop bank, concepts, pseudo-label bank (stored, resumable).
* :mod:`~nbseg.methods.transfgu.gradcam` - Grad-CAM on the last block's attention (Eq. 5-7), two gradient paths.
* :mod:`~nbseg.methods.transfgu.losses` - Eq. (8)-(15) as pure functions; :mod:`~.data` - crops and roi_align.
* :mod:`~nbseg.methods.transfgu.evaluation` - the stages wired, the evaluation; :mod:`~.table3` - Table 3 and the
  over-clustering measurement; :mod:`~.claims` - Table 3 as a row of ``nbseg claims``; :mod:`~.figures`;
  :mod:`~.paper` (the paper's numbers); :mod:`~.ablations`; :mod:`~.diagnose` - where the pseudo labels lose
  accuracy (issue #16, ``benchmarks/transfgu_diagnose.py``).
* ``nbseg/configs/transfgu_{world,voc,cocostuff27}.yaml`` - the shipped configs.
"""
from pathlib import Path

from nbseg.methods.base import MethodSpec, PaperNumbers, register
from nbseg.methods.transfgu.claims import transfgu_claims
from nbseg.methods.transfgu.ablations import ABLATION_COLUMNS, ABLATIONS, PAPER_COLUMN, SMOKE_ABLATIONS
from nbseg.methods.transfgu.evaluation import (SMOKE_PROFILE, SMOKE_VAL_LIMIT, epoch_evaluator, evaluate_transfgu,
                                               training_dataset)
from nbseg.methods.transfgu.model import SegmenterDecoder, TransFGU, TransFGUConfig
from nbseg.methods.transfgu.paper import PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_1, PAPER_TABLE_3

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _figures(evaluation, out_dir):
    from nbseg.methods.transfgu.figures import evaluation_figures

    return evaluation_figures(evaluation, out_dir)


SPEC = register(MethodSpec(
    name="transfgu",
    title="TransFGU (Yin et al. 2022)",
    config_class=TransFGUConfig,
    model_class=TransFGU,
    configs={name: CONFIGS / f"transfgu_{name}.yaml" for name in ("world", "voc", "cocostuff27")},
    training_dataset=training_dataset,
    evaluate=evaluate_transfgu,
    inference_size=lambda cfg: cfg.image_size,
    figures=_figures,
    smoke=SMOKE_PROFILE,
    smoke_eval_limit=SMOKE_VAL_LIMIT,
    ablations=ABLATIONS,
    smoke_ablations=SMOKE_ABLATIONS,
    ablation_columns=ABLATION_COLUMNS,
    paper=PaperNumbers(source=PAPER_SOURCE, setting=f"{PAPER_SETTING['encoder']}, {PAPER_SETTING['protocol']}",
                       values={**{f"table_1/{k}/miou": v[0] for k, v in PAPER_TABLE_1.items()},
                               **{f"table_3/{k}/{name}": v[i] for k, v in PAPER_TABLE_3.items()
                                  for i, name in enumerate(("initial", "trained", "bootstrapped"))}}),
    paper_column=PAPER_COLUMN,
    epoch_evaluator=epoch_evaluator,
    claims=transfgu_claims,
))

__all__ = ["SPEC", "TransFGU", "TransFGUConfig", "SegmenterDecoder"]
