"""Track a movie while adding the cells that appear on later frames (``--detect-new-cells``).

Prompts on the first frame (``--prompts auto`` or a user's clicks) only cover the cells present
then; in a time-lapse cells also enter the field of view, and an empty trench fills up. So,
while propagating forward, every ``every`` frames the frame just tracked is searched for cells
(:meth:`TrackingSession.detect`) and those that no tracked mask already covers become new
objects (new IDs, no parent) prompted by their mask on that frame.

A new cell is tracked **forward only** from the frame where it was found: it entered the field
there, so tracking it backward would invent a past it does not have: such a cell starts on
the frame it was found on (``add_detections(..., starts_here=True)``), so no later propagation
tracks it before that frame either. Detection happens
only during the forward part of a run. With direction "both" the caller's prompts are first
tracked over the whole movie (forward, then backward, the session's own order) *before* the
first detection, so that cells prompted later in the movie are already tracked when earlier
frames are searched and are not found a second time; the detection pass then tracks only the
cells it adds.

:meth:`TrackingSession.propagate` raises :class:`PropagationInterrupted` when the session
changes while it is paused, and adding an object is such a change; the forward run is therefore
a series of propagations, each ending on a detection frame.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

from .detect_config import DetectConfig
from .session import FrameResult, TrackingSession

__all__ = ["NewCellTracking", "check_new_cell_options", "detection_frames", "track_with_new_cells"]


def check_new_cell_options(every: int, direction: str) -> None:
    """Refuse options that cannot work, before a model loads or a frame is tracked."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(
            f"detecting new cells every N frames needs N >= 0 (0 = off), got {every!r}"
        )
    if direction not in ("forward", "backward", "both"):
        raise ValueError(f"direction must be forward, backward or both, got {direction!r}")
    if every and direction == "backward":
        raise ValueError(
            "new cells are tracked forward from the frame where they appear; detecting them "
            "needs direction 'forward' or 'both', not 'backward'"
        )


def detection_frames(num_frames: int, every: int) -> list[int]:
    """Frames searched for new cells: ``every, 2 * every, ...`` (frame 0 holds the seeds);
    none when ``every`` is 0."""
    return list(range(every, num_frames, every)) if every else []


class NewCellTracking:
    """An iterator of the :class:`FrameResult` of each computed frame (stop iterating, or
    :meth:`close`, to cancel: the session stays consistent, as with ``propagate``).

    A detection frame is yielded twice when cells were added there: once tracked, once more
    with the new cells decoded from their masks. :attr:`added` maps each detection frame to the
    IDs of the cells added on it (so far)."""

    def __init__(
        self,
        session: TrackingSession,
        every: int,
        config: DetectConfig | None,
        direction: str,
        max_overlap: float,
    ) -> None:
        self.session = session
        self.added: dict[int, list[int]] = {}
        self._steps = self._run(every, config, direction, max_overlap)

    @property
    def new_ids(self) -> list[int]:
        """Every object added by this run, in the order found."""
        return [i for ids in self.added.values() for i in ids]

    def __iter__(self) -> NewCellTracking:
        return self

    def __next__(self) -> FrameResult:
        return next(self._steps)

    def close(self) -> None:
        self._steps.close()

    def _run(
        self, every: int, config: DetectConfig | None, direction: str, max_overlap: float
    ) -> Iterator[FrameResult]:
        if direction == "both" or not every:
            # the session's own order for "both", forward then backward, as SAM 2's predictor:
            # backward first gave an object prompted mid-movie a memory of absent frames before
            # its prompt, so its forward masks shrank and detection added it a second time
            yield from self.session.propagate(direction)
            if not every:
                return
        for t in detection_frames(self.session.num_frames, every):
            yield from self.session.propagate("forward", end=t)
            found = self.session.detect(t, config)
            self.added[t] = self.session.add_detections(t, found, max_overlap, starts_here=True)
        yield from self.session.propagate("forward")


def track_with_new_cells(
    session: TrackingSession,
    every: int,
    config: DetectConfig | None = None,
    *,
    direction: str = "forward",
    max_overlap: float = 0.5,
) -> NewCellTracking:
    """Propagate ``session`` and, every ``every`` frames, add the cells found outside the
    tracked masks (see the module docstring); iterate the result to run it.

    ``direction``: "forward", or "both" (the given prompts tracked both ways first, then the
    forward pass with detection). "backward" only works with ``every`` 0, which adds nothing and is
    ``session.propagate(direction)``. ``config``: the detection options; ``max_overlap``: a
    detection with more than this fraction under tracked labels is a cell already tracked.
    Arguments are checked here, before anything runs."""
    check_new_cell_options(every, direction)
    if every and direction == "forward":
        _warn_late_prompts(session, every)
    return NewCellTracking(session, every, config, direction, max_overlap)


def _warn_late_prompts(session: TrackingSession, every: int) -> None:
    """Forward tracking leaves a cell first prompted on a later frame untracked before that
    frame, so a search there finds it as a new cell, and the two objects then share it."""
    first = every  # the first frame searched (detection_frames)
    late = [o for o in session.object_ids if min(session.prompt_frames(o), default=0) > first]
    if late:
        warnings.warn(
            f"cell(s) {', '.join(map(str, late[:10]))} are first prompted after frame "
            f"{first}, the first frame searched for new cells: tracking only forward, they "
            "are not tracked before their prompt and can be found there as new cells (two IDs "
            "on one cell); track in both directions to avoid it",
            UserWarning,
            stacklevel=3,
        )
