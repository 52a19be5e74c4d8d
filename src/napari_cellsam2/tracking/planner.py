"""Which objects a propagation runs, from which frame, in which direction: pure functions.

The tracking session keeps, per object, the frames it may live on (a daughter from its
division frame, a mother up to the frame before), its prompt frames and how far each direction
is up to date (``pending_fwd``: the first frame whose forward result is stale or missing;
``pending_bwd``: the first frame, going back, still to be filled). From that alone the planner
decides the passes of :meth:`TrackingSession.propagate`; it needs no model and no tensors, so
its rules are tested directly (``tests/test_tracking_planner.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DIRECTIONS", "ObjectSpan", "Pass", "advance", "is_active", "pass_start", "plan"]

DIRECTIONS = ("forward", "backward", "both")


@dataclass(frozen=True)
class ObjectSpan:
    """What the planner needs to know about one object."""

    id: int
    prompt_frames: tuple[int, ...]  # sorted, at least one
    lo: int  # first frame it may live on
    hi: int  # last frame it may live on
    pending_fwd: int | None = None
    pending_bwd: int | None = None


@dataclass
class Pass:
    """Frames visited in one direction, and the frame each object starts on in this pass
    (daughters created by a division during the pass are added to ``starts``)."""

    direction: str
    frames: range
    starts: dict[int, int]
    stop: int


def pass_start(o: ObjectSpan, forward: bool, start: int | None, explicit: bool) -> int | None:
    """The frame ``o`` starts on, before clipping to its bounds, or None if it does not run.

    With ``start``, from there (but not before its first prompt going forward, nor after its
    last going backward); else from where it is stale; an object asked for explicitly that is
    up to date runs from its first (forward) or last (backward) prompt."""
    if start is not None:
        return max(start, o.prompt_frames[0]) if forward else min(start, o.prompt_frames[-1])
    pending = o.pending_fwd if forward else o.pending_bwd
    if pending is None and explicit:
        return o.prompt_frames[0] if forward else o.prompt_frames[-1]
    return pending


def plan(
    objects: Iterable[ObjectSpan],
    num_frames: int,
    direction: str,
    start: int | None = None,
    end: int | None = None,
    explicit: bool = False,
) -> list[Pass]:
    """The passes of a propagation (forward, backward, or forward then backward for "both").

    ``start`` / ``end`` are frame positions already checked to lie in the movie; ``explicit``:
    the objects were named by the caller (they run even when up to date)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if direction == "both" and end is not None:
        raise ValueError("end cannot be combined with direction 'both'")
    objects = list(objects)
    passes = []
    for d in ("forward", "backward") if direction == "both" else (direction,):
        forward = d == "forward"
        stop = end if end is not None else (num_frames - 1 if forward else 0)
        if start is not None and (start > stop if forward else start < stop):
            raise ValueError(f"start {start} is past end {stop} for direction {d!r}")
        starts = {}
        for o in objects:
            s = pass_start(o, forward, start, explicit)
            if s is None:
                continue
            if forward and max(s, o.lo) <= min(o.hi, stop):
                starts[o.id] = max(s, o.lo)
            elif not forward and min(s, o.hi) >= max(o.lo, stop):
                starts[o.id] = min(s, o.hi)
        if starts:
            if forward:
                frames = range(min(starts.values()), stop + 1)
            else:
                frames = range(max(starts.values()), stop - 1, -1)
            passes.append(Pass(d, frames, starts, stop))
    return passes


def is_active(p: Pass, obj_id: int, lo: int, hi: int, t: int) -> bool:
    """Whether the object runs on frame ``t`` of pass ``p`` (it lives on ``lo..hi``)."""
    s = p.starts.get(obj_id)
    if s is None:
        return False
    if p.direction == "forward":
        return s <= t <= min(hi, p.stop)
    return max(lo, p.stop) <= t <= s


def advance(p: Pass, o: ObjectSpan, t: int) -> tuple[int | None, int | None]:
    """``(pending_fwd, pending_bwd)`` of an active object after pass ``p`` computed frame ``t``:
    the stale range it was working through moves on by one frame, or is done at its bound."""
    s = p.starts[o.id]
    fwd, bwd = o.pending_fwd, o.pending_bwd
    if p.direction == "forward" and fwd is not None and s <= fwd <= t + 1:
        fwd = t + 1 if t + 1 <= o.hi else None
    if p.direction == "backward" and bwd is not None and t - 1 <= bwd <= s:
        bwd = t - 1 if t - 1 >= o.lo else None
    return fwd, bwd
