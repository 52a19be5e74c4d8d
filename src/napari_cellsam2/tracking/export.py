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

from ..ctc import Lineage
from ..ctc.repair import plan_segments, relabel_segments


@dataclass(frozen=True)
class TrackingResult:
    """A CTC-ready result: ``labels`` (T, Y, X) and the ``lineage`` that matches them.

    ``labels`` is a copy of the session's array (made once, when the result is taken), in
    which later parts of split objects carry their new labels (``segments`` maps each object
    ID to its parts' labels, in time order). Lineage frames are CTC indices
    (``first_frame`` + position).
    """

    labels: np.ndarray
    lineage: Lineage
    segments: dict[int, list[int]]
    first_frame: int = 0


def build_result(
    labels: np.ndarray,
    presence: Mapping[int, Iterable[int]],
    parents: Mapping[int, int],
    first_frame: int = 0,
    copy: bool = True,
) -> TrackingResult:
    """Split gapped objects into tracks and relabel their later parts in a copy of ``labels``
    (in ``labels`` itself with ``copy=False``, for a caller that already copied them)."""
    lineage, parts = plan_segments(presence, parents, first_frame)
    segments = {oid: [label for label, _, _ in p] for oid, p in parts.items()}
    return TrackingResult(relabel_segments(labels, parts, copy), lineage, segments, first_frame)
