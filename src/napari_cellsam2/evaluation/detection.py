"""How many cells a detection found: found objects matched to GT cells by mask IoU.

A found object matches a GT cell at IoU >= 0.5, each at most once, greedily by IoU (at IoU above
0.5 a match is unique anyway; the greedy order only settles exact ties). Used to score automatic
seeding (``tracking.detect``) by the scripts that measure it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["detection_counts"]


def detection_counts(found: np.ndarray, gt: np.ndarray, min_iou: float = 0.5) -> dict[str, int]:
    """``found`` and ``gt`` are (Y, X) label frames; returns the number of found objects, of GT
    cells and of matched pairs."""
    found_ids, f = np.unique(found, return_inverse=True)
    gt_ids, g = np.unique(gt, return_inverse=True)
    # pixel counts of every (found, gt) label pair, label 0 included
    pairs = np.bincount(f.ravel() * len(gt_ids) + g.ravel(), minlength=len(found_ids) * len(gt_ids))
    inter = pairs.reshape(len(found_ids), len(gt_ids))
    areas_f, areas_g = inter.sum(1), inter.sum(0)
    keep_f, keep_g = found_ids != 0, gt_ids != 0
    inter, areas_f, areas_g = inter[keep_f][:, keep_g], areas_f[keep_f], areas_g[keep_g]
    iou = inter / np.maximum(areas_f[:, None] + areas_g[None, :] - inter, 1)
    used_f, used_g = set(), set()
    for i, j in sorted(zip(*np.nonzero(iou >= min_iou), strict=True), key=lambda p: -iou[p]):
        if i not in used_f and j not in used_g:
            used_f.add(i)
            used_g.add(j)
    return {"found": int(keep_f.sum()), "gt": int(keep_g.sum()), "matched": len(used_f)}
