"""How the tracker finds divisions, importable without torch so that the CLI and the dock can
build their choices from it without loading the model stack.

* ``learned``: CellSAM2's division head (:mod:`napari_cellsam2.model.heads`) decides; the
  daughters are the decoder's multimask outputs 1 and 2 and start from the mother's memory
  (:mod:`.divisions`). The default for a model that has the head.
* ``learned+split``: the head first; where it does not divide a cell, the ``split`` rule
  below may. The head misses divisions that the mask shows (docs/results/divisions.md).
* ``split``: a tracked mask that falls apart into two substantial pieces is a division
  (a heuristic for models without the head; its daughters start with fresh memory).
* ``off``: no automatic divisions (divide by hand). The default without the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DIVISION_MODES", "LEARNED_MODES", "DivisionConfig", "resolve_mode"]

DIVISION_MODES = ("learned", "learned+split", "split", "off")
LEARNED_MODES = ("learned", "learned+split")  # the modes that need the division head


def _opt(default: float | int, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DivisionConfig:
    """When the tracker divides a cell. The ``div_*`` thresholds are those of a learned division,
    named and set as in CellSAM2's inference: all three must hold for a tracked cell to divide
    (modes ``learned``, ``learned+split``). The ``split_*`` ones are the mask-split rule's
    (modes ``split``, ``learned+split``): both parts must be this large. The CLI's flags and
    the dock's "Division options" are built from these fields."""

    div_obj_score_thresh: float = _opt(
        0.5, "learned: division probability above which a cell divides"
    )
    div_presence_thresh: float = _opt(
        0.5, "learned: the dividing cell's presence probability must exceed"
    )
    div_iou_thresh: float = _opt(0.7, "learned: both daughters' predicted IoUs must exceed")
    split_min_area: int = _opt(
        20, "split: each part of a split mask needs at least this many pixels (original frame)"
    )
    split_min_fraction: float = _opt(
        0.25, "split: each part needs at least this fraction of the cell's area on the frame before"
    )

    def __post_init__(self) -> None:
        for name in (
            "div_obj_score_thresh",
            "div_presence_thresh",
            "div_iou_thresh",
            "split_min_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.split_min_area < 1:
            raise ValueError(f"split_min_area must be >= 1, got {self.split_min_area}")


def resolve_mode(mode: str | None, has_head: bool) -> str:
    """The division mode to use: ``mode`` checked, or the default for the model."""
    if mode is None:
        return "learned" if has_head else "off"
    if mode not in DIVISION_MODES:
        raise ValueError(f"divisions must be one of {DIVISION_MODES}, got {mode!r}")
    if mode in LEARNED_MODES and not has_head:
        raise ValueError(
            f"divisions={mode!r} needs a model with a division head (train one with "
            "scratch.pred_div_scores=true); use 'split' or 'off'"
        )
    return mode
