"""The options of automatic cell detection (:mod:`.detect`), importable without torch so that the
CLI can build its ``--detect-*`` flags from them without loading the model stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DETECT_METHODS", "DetectConfig"]


DETECT_METHODS = ("auto", "heatmap", "grid")


def _opt(default: float | int | str, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class DetectConfig:
    """Options of :func:`detect_cells`; the CLI builds its ``--detect-*`` flags from these
    fields (defaults and help included)."""

    method: str = _opt(
        "auto",
        "where to click: heatmap (the model's cell-centre peaks), grid (a regular grid of "
        "points) or auto (heatmap when the model has the head, else grid)",
        choices=DETECT_METHODS,
    )
    min_heatmap_score: float = _opt(0.1, "heatmap: a centre peak must exceed this probability")
    points_per_side: int = _opt(32, "grid points along the frame's longer side")
    min_object_score: float = _opt(
        0.0, "keep a point's mask if SAM 2's object-score logit is above", signed=True
    )
    min_predicted_iou: float = _opt(
        0.6, "grid: keep a point's mask if its predicted IoU is at least"
    )
    heatmap_min_predicted_iou: float = _opt(
        0.3, "heatmap: keep a peak's mask if its predicted IoU is at least"
    )
    nms_iou: float = _opt(0.5, "drop a mask overlapping a better one by more than this IoU")
    min_area: int = _opt(10, "drop a mask with fewer pixels (original frame, after overlaps)")
    batch_size: int = _opt(256, "grid points per decoder pass")

    def __post_init__(self) -> None:
        if self.method not in DETECT_METHODS:
            raise ValueError(f"method must be one of {DETECT_METHODS}, got {self.method!r}")
        if not 0.0 <= self.min_heatmap_score <= 1.0:
            raise ValueError(f"min_heatmap_score must be in [0, 1], got {self.min_heatmap_score}")
        if self.points_per_side < 1 or self.batch_size < 1 or self.min_area < 0:
            raise ValueError(
                "points_per_side and batch_size must be >= 1 and min_area >= 0; got "
                f"{self.points_per_side}, {self.batch_size}, {self.min_area}"
            )
        for name in ("nms_iou", "min_predicted_iou", "heatmap_min_predicted_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
