"""PGSeg (Zhang et al., NeurIPS 2023, "Uncovering Prototypical Knowledge for Weakly Open-Vocabulary Semantic
Segmentation"), registered as ``pgseg``: GroupViT + a text encoder trained from the world's captions with
prototypical regularisation (NPR), segmenting by class name.

* :mod:`~nbseg.methods.pgseg.text` - captions dataset, word tokenizer (saved with the checkpoint), text encoder.
* :mod:`~nbseg.methods.pgseg.groupvit` - the GroupViT image encoder with I-NPR.
* :mod:`~nbseg.methods.pgseg.losses` - L_IT, EM prototypes, Hungarian pairing, HRS, L_PG (pure functions).
* :mod:`~nbseg.methods.pgseg.model` - config (``variant: paper | official``), the model, zero-shot ``predict``.
* :mod:`~nbseg.methods.pgseg.zeroshot` - zero-shot segmentation and the Fig. 5-6 measures (pure functions).
* :mod:`~nbseg.methods.pgseg.evaluation` - training data, zero-shot evaluation; :mod:`~nbseg.methods.pgseg.claims`
  the Table-4 measurement over seeds and its ``nbseg claims`` row; :mod:`~nbseg.methods.pgseg.ablations`,
  :mod:`~nbseg.methods.pgseg.paper`.
"""
from pathlib import Path

from nbseg.methods.base import MethodSpec, PaperNumbers, register
from nbseg.methods.pgseg.ablations import ABLATION_COLUMNS, ABLATIONS, PAPER_COLUMN, SMOKE_ABLATIONS
from nbseg.methods.pgseg.claims import pgseg_claims
from nbseg.methods.pgseg.evaluation import evaluate_pgseg, training_dataset
from nbseg.methods.pgseg.model import PGSeg, PGSegConfig
from nbseg.methods.pgseg.paper import PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_1, PAPER_TABLE_4

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE_PROFILE = {"dim": 32, "heads": 2, "depth_stage1": 1, "depth_stage2": 1, "depth_final": 1,
                 "groups_stage1": 8, "groups_stage2": 4, "embed_dim": 32, "text_width": 32, "text_depth": 1,
                 "text_heads": 2, "train_limit": 16, "batch_size": 8, "epochs": 1, "npr_start_epoch": 0,
                 "threshold_images": 8, "device": "cpu", "em_iters": 3}
SMOKE_EVAL_LIMIT = 8


def _evaluate(model, *, split=None, limit=None, kmeans=True, progress=True):
    return evaluate_pgseg(model, split=split, limit=limit, kmeans=kmeans, progress=progress)


SPEC = register(MethodSpec(
    name="pgseg",
    title="PGSeg (Zhang et al. 2023)",
    config_class=PGSegConfig,
    model_class=PGSeg,
    configs={name: CONFIGS / f"pgseg_{name}.yaml" for name in ("world", "voc")},
    training_dataset=training_dataset,
    evaluate=_evaluate,
    inference_size=lambda cfg: cfg.image_size,
    smoke=SMOKE_PROFILE,
    smoke_eval_limit=SMOKE_EVAL_LIMIT,
    ablations=ABLATIONS,
    smoke_ablations=SMOKE_ABLATIONS,
    ablation_columns=ABLATION_COLUMNS,
    paper=PaperNumbers(source=PAPER_SOURCE, setting=f"{PAPER_SETTING['dataset']}, {PAPER_SETTING['encoder']}",
                       values={**{f"table_1/{k}": v for k, v in PAPER_TABLE_1.items()},
                               **{f"table_4/{k}": v for k, v in PAPER_TABLE_4.items()}}),
    paper_column=PAPER_COLUMN,
    claims=pgseg_claims,
))

__all__ = ["SPEC", "PGSeg", "PGSegConfig", "SMOKE_PROFILE", "SMOKE_EVAL_LIMIT"]
