"""AlignSeg (Liu et al., "Rethinking Self-Supervised Semantic Segmentation: Achieving End-to-End Segmentation",
TPAMI 2024), registered as ``alignseg``.

* :mod:`~nbseg.methods.alignseg.model` - config, decoder, the model (``training_step``, ``scores_from_features``,
  ``predict``, ``provenance``), the training and evaluation datasets.
* :mod:`~nbseg.methods.alignseg.losses` - Eq. (4)-(11) as pure tensor functions, ``paper`` and ``official`` variants.
* :mod:`~nbseg.methods.alignseg.evaluation` - both protocols beside k-means; the notebook's workflows.
* :mod:`~nbseg.methods.alignseg.figures` - Tables I, II, IV and Figs. 7-9.
* :mod:`~nbseg.methods.alignseg.ablations` - Table II as data; :mod:`~nbseg.methods.alignseg.paper` - the numbers.
* :mod:`~nbseg.methods.alignseg.claims` - the paper's central claims as rows of ``nbseg claims``.
* ``nbseg/configs/alignseg_{world,voc,cocostuff27}.yaml`` - the shipped configs.
"""
from pathlib import Path

from nbseg.data.multicrop import collate_multicrop
from nbseg.methods.alignseg.ablations import (DELTA_COLUMN, PAPER_COLUMN, SMOKE_SETS, TABLE_COLUMNS, TABLE_CSV,
                                             TABLE_II, RUN_FOLDER)
from nbseg.methods.alignseg.claims import alignseg_claims
from nbseg.methods.alignseg.evaluation import epoch_evaluator, evaluate_alignseg
from nbseg.methods.alignseg.figures import evaluation_figures
from nbseg.methods.alignseg.losses import check_variant
from nbseg.methods.alignseg.model import (AlignSeg, AlignSegConfig, AlignSegDecoder, AlignSegDecoderLayer,
                                          CropFeatureCache, evaluation_dataset, training_dataset)
from nbseg.methods.alignseg.paper import PAPER_SOURCE, PAPER_TABLE_II
from nbseg.methods.base import MethodSpec, PaperNumbers, register
from nbseg.prototype_scores import prototype_cosine_maps as prototype_similarity   # Eq. (2), the old name
from nbseg.prototype_scores import segment_by_argmax as segment                    # Eq. (3), the old name

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _evaluate(model: AlignSeg, *, split: str | None = None, limit: int | None = None, kmeans: bool = True,
              progress: bool = True):
    return evaluate_alignseg(model, evaluation_dataset(model.cfg, split), limit=limit, kmeans=kmeans,
                             seed=model.cfg.seed, progress=progress)


SPEC = register(MethodSpec(
    name="alignseg",
    title="AlignSeg (Liu et al., TPAMI 2024)",
    config_class=AlignSegConfig,
    model_class=AlignSeg,
    configs={name: CONFIGS / f"alignseg_{name}.yaml" for name in ("world", "voc", "cocostuff27")},
    training_dataset=lambda cfg, model, progress=True: training_dataset(cfg),
    collate_fn=collate_multicrop,
    evaluate=_evaluate,
    inference_size=lambda cfg: cfg.eval_size,
    figures=evaluation_figures,
    smoke={"max_train_images": 64, "batch_size": 16, "epochs": 2},
    smoke_eval_limit=32,
    ablations=TABLE_II,
    smoke_ablations=SMOKE_SETS,
    ablation_columns=TABLE_COLUMNS,
    ablation_run_folder=RUN_FOLDER,
    ablation_table=TABLE_CSV,
    ablation_delta_column=DELTA_COLUMN,
    paper=PaperNumbers(source=PAPER_SOURCE, setting="PASCAL VOC 2012 val, DINO ViT-S/16",
                       values={f"table_ii/{part}/{row}": v for part, rows in PAPER_TABLE_II.items()
                               for row, v in rows.items()}),
    paper_column=PAPER_COLUMN,
    epoch_evaluator=epoch_evaluator,
    claims=alignseg_claims,
))

__all__ = ["SPEC", "AlignSeg", "AlignSegConfig", "AlignSegDecoder", "AlignSegDecoderLayer", "CropFeatureCache",
           "prototype_similarity", "segment", "training_dataset", "evaluation_dataset", "check_variant"]
