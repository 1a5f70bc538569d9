"""Evaluation of unsupervised segmentations: confusion matrices, matching protocols, mIoU (see ``metrics``).

The ``nbseg eval`` command lives in ``nbseg.evaluation.cli``.
"""
from nbseg.evaluation.metrics import (
    MEAN_OVER,
    PROTOCOLS,
    ConfusionAccumulator,
    EvalResult,
    confusion_matrix,
    evaluate,
    evaluate_hungarian,
    evaluate_many_to_one,
    evaluate_per_image_precision,
    fold_confusion,
    hungarian_match,
    many_to_one_match,
    scores_from_confusion,
)

__all__ = [
    "MEAN_OVER", "PROTOCOLS", "ConfusionAccumulator", "EvalResult", "confusion_matrix", "evaluate",
    "evaluate_hungarian", "evaluate_many_to_one", "evaluate_per_image_precision", "fold_confusion",
    "hungarian_match", "many_to_one_match", "scores_from_confusion",
]
