"""From per-object SAM 2 logits to one labels frame, and division detection on it.

SAM 2 predicts each object independently, so masks can overlap. As in Meta's video predictor
(its non-overlapping constraint) each pixel goes to the object with the highest mask logit, and
only if that logit is positive: no pixel ever belongs to two cells.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch
from scipy import ndimage


def resolve_overlaps(logits: torch.Tensor, ids: Sequence[int]) -> np.ndarray:
    """(N, Y, X) mask logits of objects ``ids`` -> (Y, X) int64 map of the winning object ID."""
    if logits.shape[0] != len(ids):
        raise ValueError(f"{logits.shape[0]} logit maps for {len(ids)} object IDs")
    if len(ids) == 0:
        return np.zeros(tuple(logits.shape[1:]), np.int64)
    best, arg = logits.max(dim=0)
    id_table = torch.as_tensor(list(ids), dtype=torch.int64, device=logits.device)
    winner = torch.where(best > 0, id_table[arg], torch.zeros_like(arg))
    return winner.cpu().numpy()


def _lookup(ids: Collection[int], top: int) -> np.ndarray:
    table = np.zeros(top + 1, bool)
    table[[i for i in ids if i <= top]] = True
    return table


def compose_frame(
    old: np.ndarray, new: np.ndarray, computed: Collection[int], prompted: Collection[int]
) -> np.ndarray:
    """The labels frame after re-predicting the objects ``computed``.

    ``new`` is their overlap-resolved map. Their old pixels are cleared; they then take free
    pixels; pixels of objects that were not re-predicted stay theirs, except where an object
    in ``prompted`` (the user's prompt on this frame) claims them.
    """
    top = int(max(old.max(initial=0), new.max(initial=0), *computed, *prompted, 0))
    out = old.copy()
    out[_lookup(computed, top)[old]] = 0
    claims = new != 0
    take = claims & ((out == 0) | _lookup(prompted, top)[new])
    out[take] = new[take]
    return out


def split_parts(
    mask: np.ndarray, min_area: int, min_fraction: float, reference_area: int
) -> list[np.ndarray] | None:
    """The two largest 8-connected parts of ``mask`` if both are substantial, else None.

    Substantial: at least ``min_area`` pixels and ``min_fraction`` of ``reference_area`` (the
    mother's area on the previous frame).
    """
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count < 2:
        return None
    areas = np.bincount(labelled.ravel())[1:]
    order = np.argsort(areas)[::-1][:2]
    need = max(min_area, min_fraction * reference_area)
    if areas[order[1]] < need:
        return None
    return [labelled == k + 1 for k in order]
