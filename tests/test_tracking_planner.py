"""The propagation planner without a model: which objects run, from where, in which order."""

from __future__ import annotations

import pytest

from napari_cellsam2.tracking.planner import ObjectSpan, Pass, advance, is_active, plan

T = 20


def span(obj_id, prompts, lo=0, hi=T - 1, fwd=None, bwd=None) -> ObjectSpan:
    return ObjectSpan(obj_id, tuple(prompts), lo, hi, fwd, bwd)


def test_forward_runs_each_object_from_where_it_is_stale():
    objs = [span(1, [0], fwd=0), span(2, [5], fwd=5, bwd=5), span(3, [2])]  # 3 is up to date
    (p,) = plan(objs, T, "forward")
    assert p.direction == "forward" and p.starts == {1: 0, 2: 5}
    assert p.frames == range(0, T) and p.stop == T - 1


def test_a_correction_reruns_only_that_object_from_the_corrected_frame():
    objs = [span(1, [0, 9], fwd=9), span(2, [0])]
    (p,) = plan(objs, T, "forward")
    assert p.starts == {1: 9} and p.frames == range(9, T)


def test_backward_fills_frames_before_the_first_prompt():
    objs = [span(1, [6], bwd=5), span(2, [0])]
    (p,) = plan(objs, T, "backward")
    assert p.starts == {1: 5} and p.frames == range(5, -1, -1)


def test_both_is_forward_then_backward():
    objs = [span(1, [6], fwd=6, bwd=5)]
    forward, backward = plan(objs, T, "both")
    assert (forward.direction, backward.direction) == ("forward", "backward")
    assert forward.frames == range(6, T) and backward.frames == range(5, -1, -1)


def test_bounds_clip_a_daughter_and_a_mother():
    mother = span(1, [0], hi=7, fwd=0)  # divides on frame 8
    daughter = span(2, [8], lo=8, fwd=8)
    (p,) = plan([mother, daughter], T, "forward")
    assert p.starts == {1: 0, 2: 8}
    assert [t for t in range(T) if is_active(p, 1, 0, 7, t)] == list(range(8))
    assert [t for t in range(T) if is_active(p, 2, 8, T - 1, t)] == list(range(8, T))
    # a mother asked to run backward from after its end starts at its last frame
    (b,) = plan([mother], T, "backward", start=12, explicit=True)
    assert b.starts == {1: 0}  # its last prompt is frame 0


def test_explicit_objects_run_even_when_up_to_date_and_start_moves_them():
    objs = [span(1, [3, 10])]
    assert plan(objs, T, "forward") == []
    (p,) = plan(objs, T, "forward", explicit=True)
    assert p.starts == {1: 3}
    (p,) = plan(objs, T, "forward", start=1, explicit=True)
    assert p.starts == {1: 3}  # not before its first prompt
    (p,) = plan(objs, T, "forward", start=12, end=15)
    assert p.starts == {1: 12} and p.frames == range(12, 16)
    (b,) = plan(objs, T, "backward", start=15, explicit=True)
    assert b.starts == {1: 10}  # not after its last prompt going backward


def test_end_bounds_the_frames_and_objects_outside_do_not_run():
    objs = [span(1, [0], fwd=0), span(2, [12], lo=12, fwd=12)]
    (p,) = plan(objs, T, "forward", end=10)
    assert p.starts == {1: 0} and p.frames == range(0, 11)
    assert is_active(p, 1, 0, T - 1, 10) and not is_active(p, 1, 0, T - 1, 11)


def test_bad_requests_are_refused():
    objs = [span(1, [0], fwd=0)]
    with pytest.raises(ValueError, match="direction"):
        plan(objs, T, "sideways")
    with pytest.raises(ValueError, match="end cannot"):
        plan(objs, T, "both", end=3)
    with pytest.raises(ValueError, match="past end"):
        plan(objs, T, "forward", start=9, end=4)


def test_advance_moves_the_stale_front_and_ends_at_the_bound():
    p = Pass("forward", range(4, T), {1: 4}, T - 1)
    o = span(1, [4], hi=6, fwd=4, bwd=3)
    assert advance(p, o, 4) == (5, 3)
    assert advance(p, span(1, [4], hi=6, fwd=5), 5) == (6, None)  # its last frame is still to do
    assert advance(p, span(1, [4], hi=6, fwd=6), 6) == (None, None)  # done at its last frame
    assert advance(p, span(1, [4], fwd=15), 4) == (15, None)  # a later stale front stays
    b = Pass("backward", range(3, -1, -1), {1: 3}, 0)
    assert advance(b, span(1, [4], lo=2, bwd=3), 3) == (None, 2)
    assert advance(b, span(1, [4], lo=2, bwd=2), 2) == (None, None)
