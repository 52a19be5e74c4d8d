"""Line up GT and RES frames by their CTC indices, in the shape py-ctcmetrics expects.

py-ctcmetrics pairs masks by *position in a sorted file list* and indexes frames by the *numbers
in the track files*, so it silently goes wrong when a sequence does not start at frame 0, when RES
covers fewer frames than GT, or when a folder holds stray ``.tif`` files. Here frames are paired by
the indices in their names, track files are shifted to start at 0, frames RES lacks become ``None``
(py-ctcmetrics' own "no result mask" case, scored as misses), and RES masks whose dtype would
overflow in its label offsetting, or that have no background pixel, are staged as fixed copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from ..ctc import CTCFormatError, GroundTruth, Lineage, TrackedMasks


@dataclass
class AlignedSequence:
    """Inputs for py-ctcmetrics: per-frame mask paths and 0-based ``(n, 4)`` track arrays."""

    ref_tra: list[str] = field(default_factory=list)
    comp_tra: list[str | None] = field(default_factory=list)
    ref_seg: list[str] = field(default_factory=list)
    comp_seg: list[str | None] = field(default_factory=list)
    ref_tracks: np.ndarray | None = None
    comp_tracks: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    missing: list[int] = field(default_factory=list)  # GT frame indices that RES lacks


def tracks_array(lineage: Lineage, origin: int) -> np.ndarray:
    """``L B E P`` rows, frames counted from ``origin`` (py-ctcmetrics indexes lists by them)."""
    rows = [(t.label, t.begin - origin, t.end - origin, t.parent) for t in lineage]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _check_shapes(gt: GroundTruth, res: TrackedMasks) -> None:
    for frames in (gt.tra.masks if gt.tra else None, gt.seg):
        if frames is not None and frames.frame_shape != res.masks.frame_shape:
            raise CTCFormatError(
                res.folder,
                f"mask shape {res.masks.frame_shape} differs from {frames.frame_shape} "
                f"of the ground truth in {frames.files.folder}",
            )


def _staged_masks(res: TrackedMasks, gt_max_label: int, scratch: Path) -> dict[int, str]:
    """RES paths by frame index, with copies in ``scratch`` where py-ctcmetrics would misread.

    * It adds (largest GT label in the frame + 1) to the RES mask in place, in the file's dtype,
      so a uint8/uint16 RES with large labels would wrap around: such masks are copied as int64.
    * Its matcher assumes every frame has background and drops a frame's first label otherwise:
      a frame labelled to the last pixel is copied with one pixel of its largest object cleared
      (only in this scoring copy; the result folder is untouched).
    """
    paths = dict(zip(res.masks.indices, map(str, res.masks.files.paths), strict=True))
    res_max = max(res.lineage.tracks, default=0)
    widen = np.iinfo(res.masks.dtype).max < gt_max_label + res_max + 1
    for pos, idx in enumerate(res.masks.indices):
        frame = res.masks.frame(pos)
        full = frame.size > 0 and bool(frame.all())
        if not (widen or full):
            continue
        mask = frame.astype(np.int64)
        if full:
            largest = np.bincount(mask.ravel()).argmax()
            mask.flat[np.flatnonzero(mask == largest)[0]] = 0
        scratch.mkdir(parents=True, exist_ok=True)
        copy = scratch / res.masks.files.paths[pos].name
        tifffile.imwrite(copy, mask)
        paths[idx] = str(copy)
    return paths


def align(gt: GroundTruth, res: TrackedMasks, scratch: Path, gt_max_label: int) -> AlignedSequence:
    """Pair GT and RES frames by index; ``scratch`` receives converted copies when needed.

    ``gt_max_label`` is the largest label in any GT mask (TRA or SEG). RES frames outside the GT
    TRA range are an error; GT frames without a RES mask are listed in ``missing``.
    """
    _check_shapes(gt, res)
    comp = _staged_masks(res, gt_max_label, scratch / "res")
    out = AlignedSequence()
    if gt.tra is not None:
        indices = gt.tra.masks.indices
        first, last = indices[0], indices[-1]
        outside = [i for i in res.masks.indices if not first <= i <= last]
        if outside:
            raise CTCFormatError(
                res.folder,
                f"result frame {outside[0]} lies outside the ground-truth TRA frames "
                f"{first}..{last} ({gt.tra.folder})",
            )
        out.ref_tra = [str(p) for p in gt.tra.masks.files.paths]
        out.comp_tra = [comp.get(i) for i in indices]
        out.missing = [i for i in indices if i not in comp]
        out.ref_tracks = tracks_array(gt.tra.lineage, first)
        out.comp_tracks = tracks_array(res.lineage, first)
    if gt.seg is not None:
        out.ref_seg = [str(p) for p in gt.seg.files.paths]
        out.comp_seg = [comp.get(i) for i in gt.seg.indices]
        if gt.tra is None:
            out.missing = [i for i in gt.seg.indices if i not in comp]
    return out
