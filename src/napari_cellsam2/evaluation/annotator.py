"""A simulated annotator: how many correction clicks a tracker needs before every track is right.

Annotation effort is the number that matters to a user who corrects SAM 2 in the dock, and it
can be measured without a person: for one GT track at a time, the annotator looks at every frame
where the track exists, takes the frame with the lowest IoU between the tracker's mask and the
GT mask, and clicks the largest error region there - a positive click (on the cell) inside the
largest missed part, or a negative click (not the cell) inside the largest wrongly added part,
each at the region's interior point (the maximum of its distance transform, as in SAM's own
interactive evaluation). The tracker re-propagates and the loop repeats until every frame of the
track reaches ``iou_threshold`` or the per-track click budget is spent.

Tracks are annotated one after another in the order of their first frame (then label), as a
person working through a movie would; a track is judged when its turn comes, so a later click
that disturbs an earlier track through overlap resolution is not charged again. Only frames where
the GT track exists are judged: a prediction that lingers after the track ends (a cell that left
the channel) is not clicked away.

The annotator drives anything that follows :class:`ClickTracker`, so tests can put stand-ins
(an oracle, a tracker that predicts nothing) next to the real SAM 2 session adapter
(:class:`napari_cellsam2.evaluation.seeding.SessionTracker`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

__all__ = [
    "AnnotationSummary",
    "Click",
    "ClickTracker",
    "TrackEffort",
    "annotate",
    "frame_ious",
    "interior_point",
    "next_click",
    "summarize",
]


class ClickTracker(Protocol):
    """What the annotator needs from a tracker; labels are keyed by GT track label."""

    def labels(self) -> np.ndarray:
        """The current result, (T, Y, X) integers whose values are GT track labels."""
        ...

    def click(self, track: int, frame: int, xy: tuple[float, float], positive: bool) -> None:
        """Add one click (x, y in pixels) to ``track`` on ``frame`` and re-propagate."""
        ...


@dataclass(frozen=True)
class Click:
    track: int
    frame: int
    x: float
    y: float
    positive: bool


@dataclass
class TrackEffort:
    """One GT track: the clicks it took and its per-frame IoU before and after them."""

    track: int
    frames: int  # frames where the GT track exists (the frames judged)
    clicks: int  # correction clicks spent on this track
    converged: bool  # every judged frame reached the threshold
    initial_mean_iou: float
    initial_min_iou: float
    final_mean_iou: float
    final_min_iou: float
    click_log: list[Click] = field(default_factory=list)


@dataclass(frozen=True)
class AnnotationSummary:
    """Effort over many tracks (and sequences): what ``compare`` reports per mode.

    ``clicks_per_track`` and ``clicks_per_100_frames`` count correction clicks only; the seeding
    (one click per track on its first frame, the same for every model) is not included.
    """

    tracks: int
    movie_frames: int
    track_frames: int
    clicks: int
    clicks_per_track: float
    clicks_per_100_frames: float
    converged_fraction: float
    initial_mean_iou: float
    final_mean_iou: float
    iou_threshold: float
    max_clicks_per_track: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel deepest inside ``mask`` (distance-transform maximum; the image border
    counts as outside, so the point keeps away from it). The first such pixel wins ties."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"interior_point needs a non-empty 2-D mask, got shape {mask.shape}")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(x), float(y)


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else float(np.count_nonzero(pred & gt) / union)


def frame_ious(
    pred: np.ndarray, gt: np.ndarray, track: int, frames: Iterable[int]
) -> dict[int, float]:
    """IoU of ``track``'s predicted and GT masks on each of ``frames``."""
    return {int(t): _iou(pred[t] == track, gt[t] == track) for t in frames}


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[tuple[float, float], bool] | None:
    """The click a careful annotator makes on one frame: the interior point of the largest
    connected error region, positive if it is a missed part of the cell (false negative),
    negative if it is wrongly included (false positive). None when the masks agree.
    Ties go to the missed part."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    best: tuple[int, np.ndarray, bool] | None = None
    for region, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        if not region.any():
            continue
        parts, count = ndimage.label(region)
        sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), parts == k + 1, positive)
    if best is None:
        return None
    return interior_point(best[1]), best[2]


def _gt_tracks(gt: np.ndarray) -> list[tuple[int, list[int]]]:
    """(label, frames where it exists) for every GT label, by first frame then label."""
    presence: dict[int, list[int]] = {}
    for t in range(gt.shape[0]):
        for label in np.unique(gt[t]):
            if label:
                presence.setdefault(int(label), []).append(t)
    return sorted(presence.items(), key=lambda item: (item[1][0], item[0]))


def annotate(
    tracker: ClickTracker,
    gt: np.ndarray,
    *,
    tracks: Sequence[int] | None = None,
    iou_threshold: float = 0.8,
    max_clicks: int = 5,
) -> list[TrackEffort]:
    """Correct ``tracker`` track by track against the GT labels ``gt`` (T, Y, X) and return the
    effort per track (see the module docstring). ``tracks`` limits the GT labels annotated."""
    gt = np.asarray(gt)
    if gt.ndim != 3 or gt.dtype.kind not in "ui":
        raise ValueError(f"gt must be (T, Y, X) integer labels, got {gt.shape} {gt.dtype}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if max_clicks < 0:
        raise ValueError(f"max_clicks must be >= 0, got {max_clicks}")
    order = _gt_tracks(gt)
    if tracks is not None:
        wanted = {int(t) for t in tracks}
        missing = wanted - {label for label, _ in order}
        if missing:
            raise ValueError(f"tracks {sorted(missing)} are not in the GT labels")
        order = [(label, frames) for label, frames in order if label in wanted]
    efforts = []
    for label, frames in order:
        pred = _checked_labels(tracker, gt.shape)
        ious = frame_ious(pred, gt, label, frames)
        first = ious
        log: list[Click] = []
        while min(ious.values()) < iou_threshold and len(log) < max_clicks:
            worst = min(frames, key=lambda t: (ious[t], t))
            click = next_click(pred[worst] == label, gt[worst] == label)
            if click is None:  # IoU < threshold always leaves an error region; defensive
                break
            (x, y), positive = click
            tracker.click(label, worst, (x, y), positive)
            log.append(Click(label, worst, x, y, positive))
            pred = _checked_labels(tracker, gt.shape)
            ious = frame_ious(pred, gt, label, frames)
        efforts.append(
            TrackEffort(
                track=label,
                frames=len(frames),
                clicks=len(log),
                converged=bool(min(ious.values()) >= iou_threshold),
                initial_mean_iou=float(np.mean(list(first.values()))),
                initial_min_iou=float(min(first.values())),
                final_mean_iou=float(np.mean(list(ious.values()))),
                final_min_iou=float(min(ious.values())),
                click_log=log,
            )
        )
    return efforts


def _checked_labels(tracker: ClickTracker, shape: tuple[int, ...]) -> np.ndarray:
    pred = np.asarray(tracker.labels())
    if pred.shape != shape:
        raise ValueError(f"the tracker's labels have shape {pred.shape}, the GT {shape}")
    return pred


def summarize(
    efforts: Sequence[TrackEffort], movie_frames: int, iou_threshold: float, max_clicks: int
) -> AnnotationSummary:
    """Totals over ``efforts`` (of all sequences); ``movie_frames`` = frames of those movies."""
    n = len(efforts)
    clicks = sum(e.clicks for e in efforts)
    track_frames = sum(e.frames for e in efforts)
    return AnnotationSummary(
        tracks=n,
        movie_frames=int(movie_frames),
        track_frames=track_frames,
        clicks=clicks,
        clicks_per_track=clicks / n if n else 0.0,
        clicks_per_100_frames=100.0 * clicks / movie_frames if movie_frames else 0.0,
        converged_fraction=sum(e.converged for e in efforts) / n if n else 1.0,
        initial_mean_iou=float(np.mean([e.initial_mean_iou for e in efforts])) if n else 1.0,
        final_mean_iou=float(np.mean([e.final_mean_iou for e in efforts])) if n else 1.0,
        iou_threshold=float(iou_threshold),
        max_clicks_per_track=int(max_clicks),
    )
