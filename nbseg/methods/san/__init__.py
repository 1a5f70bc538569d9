"""SAN (Zhang et al., AAAI 2023, "Rethinking Alignment and Uniformity in Unsupervised Image Semantic Segmentation"),
registered as ``san``. The one method with **no pretrained model**: its CNN pixel encoder and ViT semantic generator
train from scratch.

* :mod:`~nbseg.methods.san.seat` - Eq. (3)-(4) and the token matcher as pure tensor functions;
  :mod:`~nbseg.methods.san.losses` - Eq. (5)-(9).
* :mod:`~nbseg.methods.san.model` - config (a switch per ambiguity), the networks, the model; the choices the paper
  leaves open are listed in its docstring. :mod:`~nbseg.methods.san.data` - the IIC-style views.
* :mod:`~nbseg.methods.san.evaluation` - Hungarian accuracy / mIoU per label set and test-time semantics, collapse
  diagnostics, pixel k-means baselines; :mod:`~nbseg.methods.san.claim` - Table 5's claim measured over seeds,
  and its ``nbseg claims`` row.
* :mod:`~nbseg.methods.san.ablations`, :mod:`~nbseg.methods.san.paper`, :mod:`~nbseg.methods.san.figures`.
* ``nbseg/configs/san_{world,potsdam,potsdam3,cocostuff27}.yaml`` - the shipped configs.
"""
from pathlib import Path

from nbseg.methods.base import MethodSpec, PaperNumbers, register
from nbseg.methods.san.ablations import ABLATION_COLUMNS, ABLATIONS, PAPER_COLUMN, SMOKE_ABLATIONS
from nbseg.methods.san.claim import san_claims
from nbseg.methods.san.data import training_dataset
from nbseg.methods.san.evaluation import evaluate_san
from nbseg.methods.san.figures import evaluation_figures
from nbseg.methods.san.model import SAN, SANConfig
from nbseg.methods.san.paper import PAPER_SETTING, PAPER_SOURCE, PAPER_TABLE_2, PAPER_TABLE_5

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE_PROFILE = {"limit": 32, "batch_size": 8, "max_steps": 8, "epochs": 2, "embed_dim": 16, "vit_depth": 1,
                 "vit_heads": 2, "crop_size": 48, "prescale": 0.5, "log_every": 2, "checkpoint_every": 4}
SMOKE_EVAL_LIMIT = 16


def _evaluate(model: SAN, *, split: str | None = None, limit: int | None = None, kmeans: bool = True,
              progress: bool = True):
    return evaluate_san(model, split=split, limit=limit, kmeans=kmeans, progress=progress)


SPEC = register(MethodSpec(
    name="san",
    title="SAN (Zhang et al. 2023)",
    config_class=SANConfig,
    model_class=SAN,
    configs={name: CONFIGS / f"san_{name}.yaml" for name in ("world", "potsdam", "potsdam3", "cocostuff27")},
    training_dataset=training_dataset,
    evaluate=_evaluate,
    inference_size=lambda cfg: None,
    figures=evaluation_figures,
    smoke=SMOKE_PROFILE,
    smoke_eval_limit=SMOKE_EVAL_LIMIT,
    ablations=ABLATIONS,
    smoke_ablations=SMOKE_ABLATIONS,
    ablation_columns=ABLATION_COLUMNS,
    paper=PaperNumbers(source=PAPER_SOURCE, setting=PAPER_SETTING,
                       values={**{f"table_2/{m}/{d}": v for m, vals in PAPER_TABLE_2.items()
                                  for d, v in zip(("coco3", "potsdam", "coco15"), vals)},
                               **{f"table_5/{row}": v for row, v in PAPER_TABLE_5.items()}}),
    paper_column=PAPER_COLUMN,
    claims=san_claims,
))

__all__ = ["SPEC", "SAN", "SANConfig", "SMOKE_PROFILE", "SMOKE_EVAL_LIMIT"]
