"""Turn tracked objects into a valid CTC result (labels + lineage).

CTC needs every track present on every frame between its begin and end. SAM 2 may lose a cell
for a few frames and find it again; we never invent masks for the missing frames. Instead the
object is split at each gap: the part after a gap becomes a new track (a fresh label, above all
object IDs) whose parent is the part before it, which is how CTC represents a gap. Divisions
link daughters to the mother's last part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..ctc import Lineage, Track


@dataclass(frozen=True)
class TrackingResult:
    """A CTC-ready result: ``labels`` (T, Y, X) and the ``lineage`` that matches them.

    ``labels`` is the session's own array when no track has a gap (no copy), otherwise a copy
    in which later parts of split objects carry their new labels (``segments`` maps each object
    ID to its parts' labels, in time order). Lineage frames are CTC indices
    (``first_frame`` + position).
    """

    labels: np.ndarray
    lineage: Lineage
    segments: dict[int, list[int]]
    first_frame: int = 0


def _runs(frames: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous (first, last) runs of sorted frame indices."""
    runs: list[tuple[int, int]] = []
    for f in sorted(frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def plan_segments(
    presence: Mapping[int, Iterable[int]], parents: Mapping[int, int], first_frame: int = 0
) -> tuple[Lineage, dict[int, list[tuple[int, int, int]]]]:
    """The lineage and, per object, its parts as (label, first, last) positions."""
    runs = {oid: _runs(frames) for oid, frames in presence.items()}
    runs = {oid: r for oid, r in runs.items() if r}
    next_label = max(runs, default=0) + 1
    parts: dict[int, list[tuple[int, int, int]]] = {}
    for oid in sorted(runs):
        labelled = []
        for k, (a, b) in enumerate(runs[oid]):
            label = oid if k == 0 else next_label
            next_label += k > 0
            labelled.append((label, a, b))
        parts[oid] = labelled
    tracks = []
    for oid, labelled in parts.items():
        mother = parents.get(oid, 0)
        parent = parts[mother][-1][0] if mother in parts else 0
        for label, a, b in labelled:
            tracks.append(Track(label, a + first_frame, b + first_frame, parent))
            parent = label
    return Lineage.from_tracks(sorted(tracks)), parts


def build_result(
    labels: np.ndarray,
    presence: Mapping[int, Iterable[int]],
    parents: Mapping[int, int],
    first_frame: int = 0,
) -> TrackingResult:
    """Split gapped objects into tracks and relabel their later parts in a copy of ``labels``."""
    lineage, parts = plan_segments(presence, parents, first_frame)
    out = labels
    if any(len(p) > 1 for p in parts.values()):
        if max(label for p in parts.values() for label, _, _ in p) > np.iinfo(labels.dtype).max:
            out = labels.astype(np.uint32)
        else:
            out = labels.copy()
        for oid, labelled in parts.items():
            for label, a, b in labelled[1:]:
                block = out[a : b + 1]
                block[block == oid] = label
    segments = {oid: [label for label, _, _ in p] for oid, p in parts.items()}
    return TrackingResult(out, lineage, segments, first_frame)
