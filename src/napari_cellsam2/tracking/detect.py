"""Find every cell on a frame without clicks: point prompts, filtered and deduplicated.

The points are CellSAM2's: the local maxima of the model's cell-centre heatmap
(:class:`napari_cellsam2.model.heads.CentreHeatmapHead`; peaks above ``min_heatmap_score`` after
a 3 x 3 maximum filter), or, for a model without that head, a regular grid over the frame (its
fallback). Each point is decoded as a single click, without memory, exactly as a user's first
click on that frame would be (multimask output, the one with the highest predicted
IoU kept). A point's mask is kept when SAM 2 says an object is there (object-score logit above
``min_object_score``), trusts its mask (predicted IoU at least ``min_predicted_iou`` for a grid
point, ``heatmap_min_predicted_iou`` for a heatmap peak) and the mask
has at least ``min_area`` pixels on the original frame; masks are then deduplicated by greedy
non-maximum suppression on mask IoU, best predicted IoU first (many grid points fall on the same
cell), and a kept mask gives up pixels an earlier, better one already holds.

All points of the grid are decoded in batches through the mask decoder on one image encoding:
the image encoder runs once per frame, not once per point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoModel

from ..model.heads import centre_head
from ..model.preprocess import Letterbox
from ..training.centres import HEATMAP_STRIDE
from ..training.forward import decode
from .detect_config import DetectConfig

__all__ = ["DetectConfig", "Detection", "detect_cells", "grid_points", "heatmap_points"]


@dataclass(frozen=True)
class Detection:
    """One cell found on a frame: its (Y, X) mask on the original grid, the point that found
    it (x, y original pixels), SAM 2's predicted IoU and object-score logit for that mask."""

    mask: np.ndarray
    point: tuple[float, float]
    predicted_iou: float
    object_score: float


def grid_points(height: int, width: int, points_per_side: int) -> np.ndarray:
    """(N, 2) x, y pixel positions: a square grid whose spacing is the longer side divided by
    ``points_per_side``, centred in each cell, so a 256 x 32 trench gets 32 x 4 points, not a
    32 x 32 grid squeezed into its width."""
    step = max(height, width) / points_per_side
    xs = (np.arange(max(1, round(width / step))) + 0.5) * (width / max(1, round(width / step)))
    ys = (np.arange(max(1, round(height / step))) + 0.5) * (height / max(1, round(height / step)))
    return np.array([(x, y) for y in ys for x in xs], dtype=np.float64)


def heatmap_points(
    model: Sam2VideoModel, features: list[torch.Tensor], letterbox: Letterbox, min_score: float
) -> np.ndarray:
    """(N, 2) x, y original pixel positions of the heatmap's local maxima above
    ``min_score``, strongest first; peaks in the letterbox padding are dropped."""
    head = centre_head(model)
    if head is None:
        raise ValueError("method 'heatmap' needs a model with a cell-centre heatmap head")
    prob = torch.sigmoid(head(list(features), model.backbone_feature_sizes)[0].float())
    peaks = (prob == F.max_pool2d(prob[None], 3, stride=1, padding=1)[0]) & (prob > min_score)
    ys, xs = peaks.nonzero(as_tuple=True)
    order = torch.argsort(prob[ys, xs], descending=True)
    grid = torch.stack([xs[order], ys[order]], dim=1).cpu().numpy().astype(np.float64)
    points = letterbox.points_to_original((grid + 0.5) * HEATMAP_STRIDE - 0.5)
    inside = (
        (points[:, 0] >= -0.5)
        & (points[:, 0] < letterbox.width - 0.5)
        & (points[:, 1] >= -0.5)
        & (points[:, 1] < letterbox.height - 0.5)
    )
    return points[inside]


def _points(
    model: Sam2VideoModel, features: list[torch.Tensor], letterbox: Letterbox, config: DetectConfig
) -> tuple[np.ndarray, float]:
    """The clicks and the predicted IoU their masks need (a heatmap peak is already a likely
    centre, so its threshold is lower: both defaults chosen on tuning movies,
    docs/results/detect_thresholds.json)."""
    method = config.method
    if method == "auto":
        method = "heatmap" if centre_head(model) is not None else "grid"
    if method == "heatmap":
        points = heatmap_points(model, features, letterbox, config.min_heatmap_score)
        return points, config.heatmap_min_predicted_iou
    points = grid_points(letterbox.height, letterbox.width, config.points_per_side)
    return points, config.min_predicted_iou


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two (H, W) bool masks."""
    return int((a & b).sum()) / max(1, int((a | b).sum()))


@torch.inference_mode()
def detect_cells(
    model: Sam2VideoModel,
    features: list[torch.Tensor],
    letterbox: Letterbox,
    config: DetectConfig | None = None,
) -> list[Detection]:
    """Cells on one frame from its image features (``get_image_features(...).fpn_hidden_states``
    of that frame: levels (HW, 1, C)), mapped back to the original frame by ``letterbox``.
    Returns the detections sorted by predicted IoU, best first, with disjoint masks."""
    config = config or DetectConfig()
    points, min_iou = _points(model, features, letterbox, config)
    if not len(points):
        return []
    sizes = model.backbone_feature_sizes
    *high, low = features
    maps = [
        f.permute(1, 2, 0).reshape(1, f.shape[2], *size)
        for f, size in zip(high, sizes[:-1], strict=True)
    ]
    cond = (low + model.no_memory_embedding).permute(1, 2, 0).reshape(1, low.shape[2], *sizes[-1])
    model_xy = torch.as_tensor(letterbox.points_to_model(points), dtype=torch.float32)
    kept_logits, kept_iou, kept_obj, kept_points = [], [], [], []
    for start in range(0, len(points), config.batch_size):
        xy = model_xy[start : start + config.batch_size].to(low.device)
        m = xy.shape[0]
        embeddings = [f.expand(m, -1, -1, -1) for f in (*maps, cond)]
        labels = torch.ones(m, 1, dtype=torch.int32, device=low.device)
        result = decode(model, embeddings, xy[:, None], labels, None, multimask=True)
        iou = result.iou_scores.float().amax(1)  # of the output kept (highest predicted IoU)
        obj = result.object_score_logits.float()
        ok = (obj > config.min_object_score) & (iou >= min_iou)
        rows = ok.nonzero().flatten()
        kept_logits.append(result.low_res_masks[rows, 0].float())
        kept_iou.append(iou[rows])
        kept_obj.append(obj[rows])
        kept_points.extend(int(start + r) for r in rows.tolist())
    if not kept_points:
        return []
    iou, obj, logits = torch.cat(kept_iou), torch.cat(kept_obj), torch.cat(kept_logits)
    detections: list[Detection] = []
    taken = torch.zeros((letterbox.height, letterbox.width), dtype=torch.bool, device=low.device)
    chosen: list[torch.Tensor] = []
    for i in torch.argsort(iou, descending=True).tolist():
        # one candidate at a time on the original grid: hundreds of kept points on a large
        # frame would not fit as one float stack
        mask = letterbox.logits_to_original(logits[i]) > 0
        if any(_mask_iou(mask, other) > config.nms_iou for other in chosen):
            continue
        own = mask & ~taken
        if int(own.sum()) < max(1, config.min_area):
            continue
        chosen.append(mask)
        taken |= own
        x, y = points[kept_points[i]]
        detections.append(
            Detection(own.cpu().numpy(), (float(x), float(y)), float(iou[i]), float(obj[i]))
        )
    return detections
