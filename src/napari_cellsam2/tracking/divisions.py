"""Learned divisions at inference: reading the division head's verdict on a tracked frame.

The tracking session records every mask-decoder call of a forward frame
(:func:`.hf_sam2.install_extra_token`); :func:`learned_division` applies CellSAM2's rule to one
object's record: the cell divides when its division probability, its presence probability and
the predicted IoUs of both multimask outputs 1 and 2 pass their thresholds
(:class:`.division_config.DivisionConfig`). Those two outputs are then the daughters' masks.
The session makes each daughter a new object that starts from a copy of the mother's memory
(:func:`inherited_outputs`), with her mask as a mask prompt on the division frame, which is
exactly how training teacher-forces a division (:func:`napari_cellsam2.training.forward.run_clip`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..model.hf_sam2 import COND, NON_COND
from .division_config import DivisionConfig

__all__ = ["DecoderRecord", "inherited_outputs", "learned_division"]

# one mask-decoder call: masks (1, 1, K, h, w), IoUs (1, 1, K), object score (1, 1), division (1,)
DecoderRecord = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def learned_division(record: DecoderRecord, config: DivisionConfig) -> torch.Tensor | None:
    """The two daughters' low-resolution logits (2, h, w) if the record says "divides", else
    None (also for a single-output decode, which has no daughters)."""
    masks, iou, object_score, division = record
    if masks.shape[2] < 3:
        return None
    divides = (
        torch.sigmoid(division.float().reshape(-1)[0]) > config.div_obj_score_thresh
        and torch.sigmoid(object_score.float().reshape(-1)[0]) > config.div_presence_thresh
        and bool((iou.float().reshape(-1)[1:3] > config.div_iou_thresh).all())
    )
    return masks[0, 0, 1:3] if divides else None


def inherited_outputs(outputs: dict[str, dict[int, Any]], frame: int) -> dict:
    """A daughter's copy of her mother's SAM 2 outputs before ``frame``: conditioning frames,
    recent memories and object pointers (tensors shared, per-frame entries copied, so pruning
    one object's entries never touches the other's)."""
    return {
        key: {f: dict(entry) for f, entry in outputs[key].items() if f < frame}
        for key in (COND, NON_COND)
    }
