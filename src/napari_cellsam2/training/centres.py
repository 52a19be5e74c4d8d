"""What the cell-centre heatmap head (:class:`napari_cellsam2.model.heads.CentreHeatmapHead`)
learns, and how: CenterNet-style targets and loss.

The target of a frame is a Gaussian bump (sigma ``SIGMA`` grid cells) at the centroid of every
labelled cell, on the head's grid (a quarter of the model resolution), with exactly 1 at the grid
cell nearest each centroid. All cells of the frame count, not only the clip's tracked subset:
an unlabelled peak would teach the head to miss cells. The loss is CenterNet's penalty-reduced
focal loss: the peaks are positives, every other cell a negative whose weight falls as
``(1 - target) ** 4`` near a centre, so a prediction one cell off is barely punished.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.preprocess import Letterbox

__all__ = ["HEATMAP_STRIDE", "SIGMA", "centre_focal_loss", "centre_heatmap"]

HEATMAP_STRIDE = 4  # the head predicts at a quarter of the model resolution (CellSAM2's design)
SIGMA = 1.0


def centre_heatmap(labels: np.ndarray, box: Letterbox) -> np.ndarray:
    """(s, s) float32 target of one labelled (Y, X) frame on the model canvas of ``box``."""
    size = box.size // HEATMAP_STRIDE
    heat = np.zeros((size, size), np.float32)
    flat = labels.ravel()
    ids = np.unique(flat)
    ids = ids[ids != 0]
    if not ids.size:
        return heat
    ys, xs = np.indices(labels.shape)
    index = np.searchsorted(ids, flat)
    present = flat != 0
    counts = np.bincount(index[present], minlength=ids.size)
    cy = np.bincount(index[present], ys.ravel()[present], minlength=ids.size) / counts
    cx = np.bincount(index[present], xs.ravel()[present], minlength=ids.size) / counts
    model_xy = box.points_to_model(np.stack([cx, cy], axis=1))
    grid = (model_xy + 0.5) / HEATMAP_STRIDE - 0.5
    gy, gx = np.indices((size, size))
    for x, y in grid:
        bump = np.exp(-((gx - x) ** 2 + (gy - y) ** 2) / (2 * SIGMA**2))
        np.maximum(heat, bump.astype(np.float32), out=heat)
        iy, ix = (int(np.clip(np.rint(v), 0, size - 1)) for v in (y, x))
        heat[iy, ix] = 1.0
    return heat


def centre_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's focal loss of (N, s, s) logits against targets, per map (N,), normalised by
    each map's number of peaks (at least 1)."""
    logits, targets = logits.float(), targets.float()
    prob = torch.sigmoid(logits)
    log_p = torch.nn.functional.logsigmoid(logits)
    log_not_p = torch.nn.functional.logsigmoid(-logits)
    peak = targets.eq(1.0).float()
    positive = peak * (1 - prob) ** alpha * log_p
    negative = (1 - peak) * (1 - targets) ** beta * prob**alpha * log_not_p
    peaks = peak.flatten(1).sum(1).clamp(min=1)
    return -(positive + negative).flatten(1).sum(1) / peaks
