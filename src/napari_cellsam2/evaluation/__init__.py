"""CTC evaluation: a thin, robust wrapper over py-ctcmetrics (TRA, SEG, DET, LNK …). Qt-free.

The simulated annotator and GT seeding (they need torch) load on first use; the fine-tuning
comparison is ``napari_cellsam2.evaluation.compare.compare``.
"""

from importlib import import_module
from typing import Any

from .metrics import DEFAULT_METRICS, supported
from .scoring import (
    PartialResultWarning,
    Scores,
    auto_workers,
    evaluate_arrays,
    evaluate_folders,
)
from .table import format_table, scores_to_json

_LAZY = {
    "annotate": ".annotator",
    "summarize": ".annotator",
    "ClickTracker": ".annotator",
    "TrackEffort": ".annotator",
    "AnnotationSummary": ".annotator",
    "SessionTracker": ".seeding",
    "seed_tracks": ".seeding",
    "track_sequence": ".seeding",
}

__all__ = [
    *_LAZY,
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
