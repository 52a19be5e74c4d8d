"""CTC evaluation: a thin, robust wrapper over py-ctcmetrics (TRA, SEG, DET, LNK …). Qt-free."""

from .metrics import DEFAULT_METRICS, supported
from .scoring import (
    PartialResultWarning,
    Scores,
    auto_workers,
    evaluate_arrays,
    evaluate_folders,
)
from .table import format_table, scores_to_json

__all__ = [
    "DEFAULT_METRICS",
    "PartialResultWarning",
    "Scores",
    "auto_workers",
    "evaluate_arrays",
    "evaluate_folders",
    "format_table",
    "scores_to_json",
    "supported",
]
