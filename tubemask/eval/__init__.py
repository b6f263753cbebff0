"""Evaluation: classification metrics with VideoMAE's multi-view protocol, AVA frame mAP, and representation
diagnostics."""

from tubemask.eval.ava import FrameKey, FrameMAPResult, frame_average_precision, voc_average_precision
from tubemask.eval.diagnostics import (
    ProbeSet,
    linear_probe_accuracy,
    participation_ratio,
    plot_diagnostics,
    pooled_features,
    probe_encoder,
    token_diagnostics,
)
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
    "FrameKey",
    "FrameMAPResult",
    "MultiViewAccumulator",
    "MultiViewResult",
    "ProbeSet",
    "confusion_matrix",
    "frame_average_precision",
    "linear_probe_accuracy",
    "multiview_predictions",
    "participation_ratio",
    "per_class_accuracy",
    "plot_diagnostics",
    "pooled_features",
    "probe_encoder",
    "save_confusion_matrix_png",
    "token_diagnostics",
    "topk_accuracy",
    "voc_average_precision",
]
