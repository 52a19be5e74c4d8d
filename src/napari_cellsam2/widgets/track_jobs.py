"""What the track panel runs in its ordered worker (``DockState.run_job(..., ordered=True)``).

Every change of the tracking session runs here, with its undo snapshot and its preview, so the
Qt main thread never calls into the session: a worker may hold the session lock for seconds
while SAM 2 runs, and a click that waited for it would freeze the viewer. Qt-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .workers import yield_cpu_to_gui

if TYPE_CHECKING:  # the tracker imports torch; the dock opens without it
    from ..tracking import DetectConfig, FrameResult, SessionSnapshot, TrackingSession
    from ..tracking.division_config import DivisionConfig

NO_CELLS = "nothing to track: click a cell (or seed from labels) first"
UP_TO_DATE = (
    "nothing to track: every cell is tracked as far as it can go; click a correction, or set "
    "'From frame' to track again from there"
)


@dataclass(frozen=True)
class Edited:
    """A finished edit: the snapshot from just before it (for Undo) and the edit's result."""

    undo: SessionSnapshot
    result: Any


@dataclass(frozen=True)
class TrackingStarted:
    """The first item a tracking job yields: how many frames follow, and the undo snapshot."""

    total: int
    undo: SessionSnapshot


def prompt_and_preview(session: TrackingSession, add: Callable[[], Any], frame: int) -> None:
    """Add a prompt (a click or a box), then decode the frame's new prompts (the preview)."""
    add()
    session.predict_frame(frame)


def edit_and_preview(
    session: TrackingSession, edit: Callable[[], Any], frame: int | None
) -> Edited:
    """Snapshot, apply ``edit`` (seed, divide, delete), then preview ``frame`` (if given)."""
    undo = session.snapshot()
    result = edit()
    if frame is not None:
        session.predict_frame(frame)
    return Edited(undo, result)


def tracking_steps(
    session: TrackingSession,
    direction: str,
    start: int | None,
    end: int | None,
    new_cells_every: int = 0,
    detect: DetectConfig | None = None,
    divisions: tuple[str, DivisionConfig] | None = None,
) -> Iterator[TrackingStarted | FrameResult]:
    """Yield :class:`TrackingStarted`, then each tracked frame; return a message instead when
    there is nothing to track (the user must hear why Track did nothing).

    ``divisions``: the division mode (checked with ``session.resolve_divisions``) and thresholds
    to track with, set on the session here, in the worker that owns it, before anything else.

    ``new_cells_every`` N > 0: every N frames also track the cells found outside the tracked
    masks (``tracking.new_cells``, with ``detect``'s options) over the whole movie; its frame
    count is not known ahead (a frame where cells were added comes twice, tracked frames are
    skipped), so :class:`TrackingStarted` gives the movie's length as the estimate."""
    yield_cpu_to_gui()
    if divisions is not None:
        session.divisions, session.division_config = divisions
    if not session.object_ids:
        return NO_CELLS
    undo = session.snapshot()
    if new_cells_every:
        from ..tracking.new_cells import track_with_new_cells

        steps = track_with_new_cells(session, new_cells_every, detect, direction=direction)
        yield TrackingStarted(session.num_frames, undo)
        yield from steps
        return None
    run = session.propagate(direction, start=start, end=end)
    if not len(run):
        return UP_TO_DATE
    yield TrackingStarted(len(run), undo)
    yield from run
    return None
