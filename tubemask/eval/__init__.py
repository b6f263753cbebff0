"""Evaluation: classification metrics with VideoMAE's multi-view protocol, and representation diagnostics."""

from tubemask.eval.diagnostics import linear_probe_accuracy, participation_ratio, token_diagnostics
from tubemask.eval.metrics import (
    MultiViewAccumulator,
    MultiViewResult,
    confusion_matrix,
    multiview_predictions,
    per_class_accuracy,
    save_confusion_matrix_png,
    topk_accuracy,
)

__all__ = [
    "MultiViewAccumulator",
    "MultiViewResult",
    "confusion_matrix",
    "linear_probe_accuracy",
    "multiview_predictions",
    "participation_ratio",
    "per_class_accuracy",
    "save_confusion_matrix_png",
    "token_diagnostics",
    "topk_accuracy",
]
