"""User prompts (points, boxes, masks) in original pixel coordinates: checks and SAM 2 inputs.

Coordinates follow napari and numpy: ``x`` is the column, ``y`` the row, pixel ``i`` covers
``[i - 0.5, i + 0.5]``. Prompts are kept in original coordinates (what the user clicked) and
converted to model coordinates only when SAM 2 runs, through the shared :class:`Letterbox`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.preprocess import Letterbox


@dataclass(frozen=True)
class PointPrompt:
    """Clicks: ``points`` (N, 2) as x, y; ``labels`` (N,) 1 = on the cell, 0 = not on it."""

    points: np.ndarray
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class BoxPrompt:
    """A box ``(x0, y0, x1, y1)`` around the cell (corners in any order)."""

    box: Sequence[float]


@dataclass(frozen=True)
class MaskPrompt:
    """The cell's mask (Y, X); non-zero = cell. SAM 2 takes it as given on its frame."""

    mask: np.ndarray


Prompt = PointPrompt | BoxPrompt | MaskPrompt


@dataclass
class FramePrompt:
    """Everything one object was given on one frame: a mask, or a box and/or clicks."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    def merged(self, prompt: Prompt) -> FramePrompt:
        """This frame's prompt after adding ``prompt``: clicks accumulate, a box replaces the
        box, a mask replaces everything, and clicks or a box replace a mask."""
        if isinstance(prompt, MaskPrompt):
            return FramePrompt(mask=prompt.mask)
        base = FramePrompt() if self.mask is not None else self
        if isinstance(prompt, BoxPrompt):
            return FramePrompt(base.points, base.labels, np.asarray(prompt.box, float), None)
        return FramePrompt(
            np.concatenate([base.points, prompt.points]),
            np.concatenate([base.labels, prompt.labels]).astype(np.int32),
            base.box,
            None,
        )


def _finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinite values: {values.tolist()}")


def check_points(points, labels, height: int, width: int) -> PointPrompt:
    """Validate clicks against a ``height`` x ``width`` frame; labels default to 1."""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"points must be numbers (N, 2) as x, y; got {points!r}") from None
    if pts.ndim == 1 and pts.shape == (2,):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"points must be a non-empty (N, 2) array of x, y; got shape {pts.shape}")
    _finite(pts, "points")
    if labels is None:
        labs = np.ones(len(pts), np.int32)
    else:
        labs = np.asarray(labels).reshape(-1)
        if labs.shape != (len(pts),):
            raise ValueError(f"got {len(pts)} points but {labs.size} labels")
        if labs.dtype.kind not in "biuf" or not np.all(np.isin(labs, (0, 1))):
            raise ValueError(f"point labels must be 1 (cell) or 0 (not cell); got {labs.tolist()}")
        labs = labs.astype(np.int32)
    outside = (
        (pts[:, 0] < -0.5)
        | (pts[:, 0] > width - 0.5)
        | (pts[:, 1] < -0.5)
        | (pts[:, 1] > height - 0.5)
    )
    if outside.any():
        x, y = pts[np.argmax(outside)]
        raise ValueError(
            f"point (x={x:g}, y={y:g}) is outside the image (width {width}, height {height}; "
            f"x must be in [-0.5, {width - 0.5}], y in [-0.5, {height - 0.5}])"
        )
    return PointPrompt(pts, labs)


def check_box(box, height: int, width: int) -> BoxPrompt:
    """Validate a box; corners may come in any order but it must have an area."""
    try:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1); got {box!r}") from None
    if b.shape != (4,):
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1); got {b.size}")
    _finite(b, "box")
    x0, x1 = sorted((b[0], b[2]))
    y0, y1 = sorted((b[1], b[3]))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {b.tolist()} is empty (zero width or height)")
    check_points([[x0, y0], [x1, y1]], None, height, width)
    return BoxPrompt((x0, y0, x1, y1))


def check_mask(mask, height: int, width: int) -> MaskPrompt:
    """Validate a (Y, X) mask; any non-zero value is the cell."""
    m = np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise ValueError(f"mask must be boolean or numeric, got dtype {m.dtype}")
    if m.shape != (height, width):
        raise ValueError(f"mask has shape {m.shape}, expected the frame shape {(height, width)}")
    m = m != 0
    if not m.any():
        raise ValueError("mask is empty (no non-zero pixel); a mask prompt must show the cell")
    return MaskPrompt(m)


def mask_canvas(mask: np.ndarray, box: Letterbox) -> torch.Tensor:
    """The (S, S) 0/1 mask SAM 2 is given, binarised at 0.5 after resizing as in SAM 2."""
    return (box.mask_to_model(mask) >= 0.5).to(torch.float32)


def point_inputs(prompt: FramePrompt, box: Letterbox, device: torch.device) -> dict:
    """SAM 2 point inputs (model pixels): the box corners (labels 2, 3) first, then the clicks."""
    coords, labels = [], []
    if prompt.box is not None:
        coords.append(box.points_to_model(prompt.box.reshape(2, 2)))
        labels.append(np.array([2, 3], np.int32))
    if len(prompt.points):
        coords.append(box.points_to_model(prompt.points))
        labels.append(prompt.labels.astype(np.int32))
    xy = torch.as_tensor(np.concatenate(coords), dtype=torch.float32, device=device)
    lab = torch.as_tensor(np.concatenate(labels), dtype=torch.int32, device=device)
    return {"point_coords": xy[None, None], "point_labels": lab[None, None]}
