"""Seed a SAM 2 tracking session from GT tracks, as the fine-tuning comparison does.

Every GT track is prompted on its own first frame, either with its GT mask or with one positive
click at its interior point (what a user would do). A track that starts later is prompted
there: two daughters of a tracked mother that start on the same frame become a division
(:meth:`TrackingSession.divide`: the mother ends the frame before, the daughters are new linked
objects that live from that frame on); any other late track (a cell entering, a lone daughter)
becomes a new object. Propagation runs forward only, so no object is ever tracked before the
frame it was prompted on - a track is not "found" before it exists.

:class:`SessionTracker` wraps the seeded session for the simulated annotator
(:mod:`.annotator`): its labels carry GT track labels, and a click re-propagates forward from
the clicked frame, re-tracking only the clicked object.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..ctc import CTCFormatError, CTCSequence, Lineage, PlacedFrames
from ..tracking.prompts import MaskPrompt, PointPrompt, Prompt, mask_canvas
from ..tracking.session import TrackingSession
from .annotator import interior_point

__all__ = ["PromptKind", "SessionTracker", "gt_labels", "seed_tracks", "track_sequence"]

PromptKind = Literal["mask", "click"]


def gt_labels(seq: CTCSequence) -> tuple[np.ndarray, Lineage]:
    """The GT TRA labels on the image frames (T, Y, X; zeros where TRA lacks a frame) and the
    TRA lineage (CTC frame indices)."""
    tra = seq.gt.tra if seq.gt else None
    if tra is None or seq.images is None:
        raise CTCFormatError(seq.folder, "needs image frames and GT TRA (NN_GT/TRA) to compare")
    placed = PlacedFrames(tra.masks, seq.first_frame, seq.num_frames)
    return np.asarray(placed), tra.lineage


def _prompt(session: TrackingSession, mask: np.ndarray, kind: PromptKind) -> Prompt:
    """A mask prompt, or a click where asked or where the mask vanishes at the model size."""
    if kind == "mask" and mask_canvas(mask, session.frames.letterbox).any():
        return MaskPrompt(mask)
    return PointPrompt(np.array([interior_point(mask)]), np.array([1], np.int32))


def seed_tracks(
    session: TrackingSession, gt: np.ndarray, lineage: Lineage, kind: PromptKind = "mask"
) -> dict[int, int]:
    """Prompt every track of ``lineage`` on its first frame (see the module docstring); ``gt``
    holds the labels on the session's frames. Returns GT track label -> session object ID."""
    if kind not in ("mask", "click"):
        raise ValueError(f"kind must be 'mask' or 'click', got {kind!r}")
    if gt.shape != (session.num_frames, session.height, session.width):
        raise ValueError(f"GT labels {gt.shape} do not match the session's frames")
    first = session.first_frame
    ids: dict[int, int] = {}
    divisions = lineage.divisions
    for track in sorted(lineage, key=lambda tr: (tr.begin, tr.label)):
        if track.label in ids:
            continue
        t = track.begin - first
        if not 0 <= t < session.num_frames:
            raise ValueError(f"track {track.label} begins on frame {track.begin}, outside movie")
        sisters = divisions.get(track.parent, [])
        if (
            track.parent in ids
            and len(sisters) == 2
            and all(lineage[s].begin == track.begin for s in sisters)
        ):
            prompts = [_prompt(session, gt[t] == s, kind) for s in sisters]
            made = session.divide(ids[track.parent], t, prompts)
            ids.update(zip(sisters, made, strict=True))
        else:
            oid = session.new_object_id()
            session.add_prompt(oid, t, _prompt(session, gt[t] == track.label, kind))
            ids[track.label] = oid
    return ids


class SessionTracker:
    """A seeded :class:`TrackingSession` seen through GT track labels (a ``ClickTracker``)."""

    def __init__(self, session: TrackingSession, ids: dict[int, int]) -> None:
        self.session = session
        self.ids = dict(ids)
        self._to_gt = np.zeros(max(ids.values(), default=0) + 1, np.int64)
        for label, oid in ids.items():
            self._to_gt[oid] = label

    def propagate(self) -> None:
        for _ in self.session.propagate("forward"):
            pass

    def labels(self) -> np.ndarray:
        """The session's labels as GT track labels; an object no GT track names (one the
        session made itself, e.g. a division or a new cell) reads as background."""
        labels, table = self.session.labels, self._to_gt
        top = int(labels.max(initial=0))
        if top >= len(table):
            table = np.pad(table, (0, top + 1 - len(table)))
        return table[labels]

    def click(self, track: int, frame: int, xy: tuple[float, float], positive: bool) -> None:
        self.session.add_points(self.ids[track], frame, [xy], [1 if positive else 0])
        self.propagate()


def track_sequence(model: Any, seq: CTCSequence, kind: PromptKind = "mask") -> SessionTracker:
    """Seed a session on ``seq`` from its GT tracks and propagate it forward."""
    gt, lineage = gt_labels(seq)
    # every GT division is seeded by hand (seed_tracks): the session's own divisions (a model
    # with a division head divides by default) would only add cells no GT track names
    session = TrackingSession(model, seq.images, first_frame=seq.first_frame, divisions="off")
    tracker = SessionTracker(session, seed_tracks(session, gt, lineage, kind))
    tracker.propagate()
    return tracker
