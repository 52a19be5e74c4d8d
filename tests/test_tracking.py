"""TrackingSession mechanics on a tiny random SAM 2: coverage, streaming, corrections, memory
bounds, overlaps, coordinates and divisions. A random model does not follow cells, so these
tests check the machinery, never accuracy."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from ctc_metrics.metrics.validation.valid import valid
from ctc_metrics.utils.filesystem import parse_masks, read_tracking_file

from napari_cellsam2.ctc import open_path
from napari_cellsam2.model.heads import attach_division_head
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import (
    MaskPrompt,
    PointPrompt,
    PropagationInterrupted,
    TrackingSession,
)
from napari_cellsam2.tracking import session as session_module
from napari_cellsam2.tracking.division_config import DivisionConfig

T, H, W = 10, 48, 64  # non-square on purpose


@pytest.fixture(scope="module")
def model():
    return build_random_model(tiny_config(64))


def disk(cx: float, cy: float, r: float, shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def make_frames(n: int = T, shape=(H, W), seed: int = 0) -> np.ndarray:
    """Two bright cells on a noisy background, one moving right."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(100, 5, (n, *shape))
    for t in range(n):
        frames[t][disk(14 + t, 16, 6, shape)] += 300
        frames[t][disk(44, 32, 7, shape)] += 300
    return frames.astype(np.uint16)


@pytest.fixture
def frames() -> np.ndarray:
    return make_frames()


def two_cells(model, frames, **kw) -> TrackingSession:
    s = TrackingSession(model, frames, **kw)
    s.add_points(1, 0, [[14, 16]])
    s.add_box(2, 0, [37, 25, 51, 39])
    return s


def ctc_valid(res: Path) -> int:
    """py-ctcmetrics' own validity check of a written RES folder."""
    masks = parse_masks(str(res))
    tracks = read_tracking_file(str(res / "res_track.txt"))
    import tifffile

    present = [[int(v) for v in np.unique(tifffile.imread(m)) if v] for m in masks]
    return valid(masks, tracks, present)


# ---- coverage and streaming ------------------------------------------------------------------
def test_both_directions_cover_every_frame(model, frames):
    s = TrackingSession(model, frames)
    s.add_points(1, 4, [[18, 16]])
    s.add_mask(2, 6, disk(44, 32, 7))
    run = s.propagate("both")
    results = list(run)
    assert len(results) == len(run)
    forward = [r.frame for r in results if r.direction == "forward"]
    backward = [r.frame for r in results if r.direction == "backward"]
    assert forward == list(range(4, T)) and backward == list(range(6, -1, -1))
    assert {r.frame for r in results} == set(range(T))
    # each object is tracked only from its prompt on, in each direction
    expected = {
        "forward": lambda t: (1,) if t < 6 else (1, 2),
        "backward": lambda t: (2,) if t > 4 else (1, 2),
    }
    assert all(r.object_ids == expected[r.direction](r.frame) for r in results)
    assert all((s.labels[t] > 0).any() for t in range(T))
    # nothing is stale any more
    assert len(s.propagate("both")) == 0


def test_results_stream_and_resume_identically(model, frames, monkeypatch):
    calls = []
    original = model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs.get("frame_idx"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    s = two_cells(model, frames)
    run = s.propagate("forward")
    first = next(run)
    assert first.frame == 0 and calls == [0]  # nothing beyond frame 0 computed yet
    for r in run:
        if r.frame == 4:
            break
    run.close()
    assert calls[-1] == 4
    assert not s.labels[5:].any()
    rest = [r.frame for r in s.propagate()]
    assert rest == list(range(5, T))
    monkeypatch.undo()

    straight = two_cells(model, frames)
    for _ in straight.propagate():
        pass
    np.testing.assert_array_equal(s.labels, straight.labels)


def test_changing_the_session_interrupts_a_paused_propagation(model, frames):
    s = two_cells(model, frames)
    run = s.propagate()
    next(run)
    s.add_points(3, 2, [[30, 40]])
    with pytest.raises(PropagationInterrupted):
        next(run)
    frames_done = [r.frame for r in s.propagate()]
    assert frames_done == list(range(1, T))  # objects 1, 2 resume at 1, object 3 starts at 2
    assert 3 in s.labels[2:]


def test_a_failure_inside_sam2_leaves_a_usable_session(model, frames, monkeypatch):
    original = model._batch_encode_memories

    def failing(*args, frame_idx, **kwargs):
        if frame_idx == 5:
            raise KeyboardInterrupt  # e.g. Ctrl-C after the masks, before their memory
        return original(*args, frame_idx=frame_idx, **kwargs)

    s = two_cells(model, frames)
    s.predict_frame(0)
    s.add_points(1, 5, [[19, 16]])
    monkeypatch.setattr(model, "_batch_encode_memories", failing)
    with pytest.raises(KeyboardInterrupt):
        s.predict_frame(5)
    monkeypatch.undo()
    # every tracked frame attends to all conditioning frames: the half-decoded prompt on
    # frame 5 must not be one of them, and it is decoded again when reached
    assert [r.frame for r in s.propagate()] == list(range(T))
    assert s.prompt_frames(1) == [0, 5] and (s.labels[5] == 1).any()


def test_resuming_after_a_failure_matches_an_uninterrupted_run(model, frames, monkeypatch):
    original = model._batch_encode_memories

    def failing(*args, frame_idx, **kwargs):
        if frame_idx == 3:
            raise RuntimeError("out of memory")
        return original(*args, frame_idx=frame_idx, **kwargs)

    s = two_cells(model, frames)
    monkeypatch.setattr(model, "_batch_encode_memories", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        for _ in s.propagate():
            pass
    monkeypatch.undo()
    assert [r.frame for r in s.propagate()] == list(range(3, T))
    straight = two_cells(model, frames)
    for _ in straight.propagate():
        pass
    np.testing.assert_array_equal(s.labels, straight.labels)


# ---- corrections -----------------------------------------------------------------------------
def test_correction_changes_nothing_before_its_frame(model, frames):
    s = two_cells(model, frames)
    for _ in s.propagate():
        pass
    before = s.labels.copy()
    s.add_points(1, 5, [[20, 16], [40, 40]], [1, 0])
    preview = s.predict_frame(5)
    assert set(preview) >= {1}
    results = list(s.propagate())
    assert [r.frame for r in results] == list(range(5, T))
    assert all(r.object_ids == (1,) for r in results)  # only the corrected object re-runs
    np.testing.assert_array_equal(s.labels[:5], before[:5])
    assert not np.array_equal(s.labels[5:], before[5:])
    # object 2 was not re-run: after the prompt frame it keeps every pixel it had
    for t in range(6, T):
        assert np.all(s.labels[t][before[t] == 2] == 2)
    assert s.prompt_frames(1) == [0, 5]


def test_click_preview_uses_cached_features(model, frames, monkeypatch):
    s = two_cells(model, frames)
    s.prefetch(3)
    encodes = []
    original = model.get_image_features
    monkeypatch.setattr(
        model, "get_image_features", lambda *a, **k: encodes.append(1) or original(*a, **k)
    )
    s.add_points(4, 3, [[30, 10]])
    masks = s.predict_frame(3)
    assert encodes == [] and 4 in masks
    assert s.predict_frame(3).keys() == masks.keys()  # nothing new: no model call either


# ---- memory ----------------------------------------------------------------------------------
def test_memory_stays_bounded(model):
    long = make_frames(48)
    stats = []
    s = two_cells(model, long, feature_cache_frames=3)
    for r in s.propagate():
        if r.frame in (20, 47):
            stats.append(s.memory_stats())
    config = model.config
    for st in stats:
        assert st["pointer_entries"] <= 2 * config.max_object_pointers_in_encoder
        assert st["memory_entries"] <= 2 * config.num_maskmem
        assert st["cond_entries"] == 2
        assert st["feature_frames"] <= 3 and st["preprocessed_frames"] <= 2
    assert stats[0] == stats[1]  # frame 20 and frame 47: the same bounded state
    for o in s._objects.values():
        for entries in o.outputs.values():
            for entry in entries.values():
                assert "high_res_masks" not in entry


# ---- overlaps and coordinates ----------------------------------------------------------------
def test_overlaps_go_to_the_highest_logit(model, frames, monkeypatch):
    seen = []
    original = session_module.resolve_overlaps

    def spy(logits, ids):
        seen.append((logits.clone(), list(ids)))
        return original(logits, ids)

    monkeypatch.setattr(session_module, "resolve_overlaps", spy)
    s = two_cells(model, frames)
    for _ in s.propagate():
        pass
    overlapping = 0
    for t, (logits, ids) in enumerate(seen):
        assert ids == [1, 2]
        both = (logits > 0).all(dim=0).numpy()
        overlapping += both.sum()
        winner = np.asarray(ids)[logits.argmax(dim=0).numpy()]
        np.testing.assert_array_equal(s.labels[t][both], winner[both])
        np.testing.assert_array_equal(s.labels[t] == 0, (logits <= 0).all(dim=0).numpy())
    assert overlapping > 0  # the random model's masks do overlap, so the rule was exercised


@pytest.mark.parametrize(("shape", "size"), [((48, 64), 64), ((64, 40), 128), ((30, 50), 128)])
def test_mask_prompts_come_back_exactly(shape, size):
    model = build_random_model(tiny_config(size))
    frames = make_frames(4, shape)
    cells = {
        1: disk(shape[1] * 0.3, shape[0] * 0.4, 5, shape),
        2: disk(shape[1] * 0.7, shape[0] * 0.6, 4, shape)
        & ~disk(shape[1] * 0.7 + 3, shape[0] * 0.6, 2, shape),
    }
    seed = np.zeros(shape, np.uint16)
    for i, m in cells.items():
        seed[m] = i
    s = TrackingSession(model, frames)
    assert s.seed_from_labels(2, seed) == [1, 2]
    masks = s.predict_frame(2)
    for i, m in cells.items():
        np.testing.assert_array_equal(masks[i], m)
    for _ in s.propagate("both"):
        pass
    np.testing.assert_array_equal(s.labels[2], seed)  # the conditioning frame stays as given


# ---- divisions and lineage -------------------------------------------------------------------
def test_manual_division_gives_a_valid_ctc_lineage(model, frames, tmp_path):
    s = two_cells(model, frames)
    for _ in s.propagate():
        pass
    d1, d2 = s.divide(1, 5, [PointPrompt([[18, 12]]), MaskPrompt(disk(20, 21, 4))])
    assert not (s.labels[5:] == 1).any()  # the mother ends on frame 4
    results = list(s.propagate())
    assert results[0].frame == 5 and set(results[0].object_ids) == {d1, d2}
    lineage = s.lineage()
    assert lineage[1].end <= 4 and lineage[d1].parent == 1 and lineage[d2].parent == 1
    assert lineage[d1].begin == 5
    res = s.write_res(tmp_path / "01_RES")
    assert ctc_valid(res) == 1
    open_path(res).validate()


def _controlled(session: TrackingSession, masks_for) -> None:
    """Control the masks the session sees (SAM 2 still runs underneath for its memory):
    object 1 gets ``masks_for(frame)``, other objects keep their previous frame's mask."""
    original = session._object_logits

    def fake(t, objs, pred_masks):
        logits = original(t, objs, pred_masks)
        for i, o in enumerate(objs):
            if t in o.prompts:
                continue
            mask = masks_for(t) if o.id == 1 else session.labels[t - 1] == o.id
            logits[i] = torch.from_numpy(np.where(mask, 50.0, -50.0))
        return logits

    session._object_logits = fake


def split_at_4(t: int) -> np.ndarray:
    if t < 4:
        return disk(16, 20, 7)
    return disk(12 - (t - 4), 20, 5) | disk(26 + (t - 4), 20, 5)


def test_automatic_division(model, frames, tmp_path):
    s = TrackingSession(model, frames, divisions="split")
    s.add_mask(1, 0, disk(16, 20, 7))
    s.add_mask(2, 0, disk(50, 38, 5))
    _controlled(s, split_at_4)
    results = list(s.propagate())
    divisions = [(r.frame, d) for r in results for d in r.divisions]
    assert len(divisions) == 1
    frame, (mother, a, b) = divisions[0]
    assert frame == 4 and mother == 1
    assert {s.labels[4][20, 12], s.labels[4][20, 26]} == {a, b}  # seeded from the two parts
    np.testing.assert_array_equal(
        s.labels[4] == a, disk(12, 20, 5) if s.labels[4][20, 12] == a else disk(26, 20, 5)
    )
    assert not (s.labels[4:] == 1).any()
    lineage = s.lineage()
    assert lineage[1].end == 3 and lineage[a].parent == lineage[b].parent == 1
    assert lineage[a].begin == lineage[b].begin == 4
    assert ctc_valid(s.write_res(tmp_path / "RES")) == 1


@pytest.mark.parametrize(("mode", "divides"), [("learned", False), ("learned+split", True)])
def test_learned_with_split_divides_what_the_head_misses(model, frames, mode, divides):
    with_head = copy.deepcopy(model)
    with torch.no_grad():
        attach_division_head(with_head).score[-1].bias.fill_(-10.0)  # the head never divides
    s = TrackingSession(with_head, frames, divisions=mode)
    s.add_mask(1, 0, disk(16, 20, 7))
    _controlled(s, split_at_4)
    divisions = [(r.frame, d[0]) for r in s.propagate() for d in r.divisions]
    assert divisions == ([(4, 1)] if divides else [])


@pytest.mark.parametrize(
    "kw",
    [
        {"divisions": "off"},
        {"divisions": "split", "division_config": DivisionConfig(split_min_area=200)},
        {"divisions": "split", "division_config": DivisionConfig(split_min_fraction=0.9)},
    ],
)
def test_no_division_when_off_or_parts_too_small(model, frames, kw):
    s = TrackingSession(model, frames, **kw)
    s.add_mask(1, 0, disk(16, 20, 7))
    _controlled(s, split_at_4)
    results = list(s.propagate())
    assert not any(r.divisions for r in results)
    assert s.object_ids == [1] and s.lineage()[1].end == T - 1


def test_gaps_become_linked_tracks(model, frames, tmp_path):
    s = TrackingSession(model, frames)
    s.add_mask(1, 0, disk(16, 20, 7))
    _controlled(s, lambda t: disk(16, 20, 7) if t not in (3, 4) else np.zeros((H, W), bool))
    for _ in s.propagate():
        pass
    assert not (s.labels[3:5] == 1).any() and (s.labels[5] == 1).any()
    result = s.result()
    assert result.segments[1][0] == 1 and len(result.segments[1]) == 2
    second = result.segments[1][1]
    assert result.lineage[1].end == 2
    assert result.lineage[second].begin == 5 and result.lineage[second].parent == 1
    np.testing.assert_array_equal(result.labels[5:] == second, s.labels[5:] == 1)
    assert ctc_valid(s.write_res(tmp_path / "RES")) == 1


def test_remove_object_and_undo_division(model, frames):
    s = two_cells(model, frames)
    for _ in s.propagate():
        pass
    d1, d2 = s.divide(1, 6, [PointPrompt([[20, 12]]), PointPrompt([[20, 22]])])
    for _ in s.propagate():
        pass
    s.remove_object(d1)
    assert not (s.labels == d1).any() and s.lineage()[d2].parent == 1
    s.remove_object(d2)
    assert s.frame_range(1) == (0, T - 1)  # no daughters left: the mother lives on
    resumed = list(s.propagate())
    assert [r.frame for r in resumed] == list(range(6, T))
    assert all(r.object_ids == (1,) for r in resumed)
    s.remove_object(2)
    assert 2 not in s.labels and s.object_ids == [1]


def test_backward_fills_objects_prompted_later(model, frames):
    s = TrackingSession(model, frames)
    s.add_points(7, 5, [[44, 32]])
    assert [r.frame for r in s.propagate("forward")] == list(range(5, T))
    assert not (s.labels[:5] == 7).any()
    assert len(s.propagate("forward")) == 0
    assert [r.frame for r in s.propagate("backward")] == list(range(5, -1, -1))
    assert s.lineage()[7].begin <= 4


def test_first_frame_shifts_the_lineage(model, frames, tmp_path):
    s = two_cells(model, frames, first_frame=100)
    for _ in s.propagate():
        pass
    lineage = s.lineage()
    assert lineage[1].begin == 100 and lineage[1].end == 100 + T - 1
    seq = open_path(s.write_res(tmp_path / "01_RES"))
    assert seq.res.masks.indices[0] == 100


def test_snapshot_and_restore_undo_everything(model, frames):
    s = two_cells(model, frames)
    for _ in s.propagate(end=4):
        pass
    saved = s.snapshot()
    before = s.labels.copy()
    for _ in s.propagate():
        pass
    tracked = s.labels.copy()
    s.divide(1, 6, [PointPrompt([[20, 12]]), PointPrompt([[20, 22]])])
    for _ in s.propagate():
        pass
    view = s.labels
    s.restore(saved)
    assert s.labels is view  # restored in place (the napari layer keeps its data)
    np.testing.assert_array_equal(s.labels, before)
    assert s.object_ids == [1, 2] and s.frame_range(1) == (0, T - 1)
    for _ in s.propagate():  # the SAM 2 memory came back too: same result as before
        pass
    np.testing.assert_array_equal(s.labels, tracked)
    s.restore(saved)  # a snapshot can be restored again
    np.testing.assert_array_equal(s.labels, before)


def test_snapshot_keeps_only_the_frames_later_actions_change(model, frames):
    """Undo must not copy a whole movie on every action: frames are kept as they change, and
    paint edits on frames the undone actions never rewrote survive the undo."""
    s = two_cells(model, frames)
    for _ in s.propagate(end=4):
        pass
    saved = s.snapshot()
    assert saved.frames == {}
    s.labels[7][:2, :2] = 9  # painted outside the session, on a frame tracking will rewrite
    s.labels[T - 1][:2, :2] = 9  # ... and on a frame it will not reach
    before = s.labels.copy()
    for _ in s.propagate(end=8):
        pass
    assert sorted(saved.frames) == [5, 6, 7, 8]
    second = s.snapshot()  # a later snapshot is kept independently
    with_cell_2 = [t for t in range(T) if (s.labels[t] == 2).any()]
    s.remove_object(2)
    assert sorted(second.frames) == with_cell_2
    s.restore(saved)
    np.testing.assert_array_equal(s.labels, before)  # the paint on frame T-1 included
    s.restore(second)
    assert sorted(t for t in range(T) if (s.labels[t] == 2).any()) == with_cell_2
    other = two_cells(model, frames)
    with pytest.raises(ValueError, match="another session"):
        other.restore(saved)


def test_painted_edits_are_exported_consistently(model, frames, tmp_path):
    s = TrackingSession(model, frames)
    s.add_mask(1, 0, disk(16, 20, 7))
    s.add_mask(2, 0, disk(50, 38, 5))
    _controlled(s, lambda t: disk(16, 20, 7))
    for _ in s.propagate():
        pass
    s.labels[3][s.labels[3] == 2] = 0  # the user erases cell 2 on frame 3 ...
    s.labels[4][:3, :3] = 50  # ... and paints a new cell on frame 4
    lineage = s.lineage()
    assert lineage[50].begin == lineage[50].end == 4 and lineage[50].parent == 0
    second = s.result().segments[2][1]
    assert lineage[2].end == 2 and lineage[second].begin == 4 and lineage[second].parent == 2
    assert ctc_valid(s.write_res(tmp_path / "RES")) == 1


def test_prefetch_encodes_outside_the_session_lock(model, frames, monkeypatch):
    """A prompt never waits for a prefetch's image encoder (seconds on a CPU), and a preview of
    the frame being encoded waits for it instead of encoding the frame twice."""
    import threading

    s = TrackingSession(model, frames)
    encode, started, release = s.model.get_image_features, threading.Event(), threading.Event()
    calls, released = [], []

    def held_encode(*args, **kwargs):
        calls.append(1)
        started.set()
        # the encoder is held until this thread has placed the prompt: a prompt that waited
        # for the encoder would keep it held until this wait gives up
        released.append(release.wait(10))
        return encode(*args, **kwargs)

    monkeypatch.setattr(s.model, "get_image_features", held_encode)
    prefetch = threading.Thread(target=s.prefetch, args=(3,))
    prefetch.start()
    assert started.wait(10)
    s.add_points(1, 3, [[14, 16]])
    release.set()
    s.predict_frame(3)
    prefetch.join()
    assert released == [True], "the prompt waited for the image encoder"
    assert len(calls) == 1 and 3 in s._features


def test_adopted_labels_are_kept_and_new_ids_start_above_them(model, frames):
    kept = np.zeros((T, H, W), np.uint16)
    kept[2, 5:9, 5:9] = 7
    s = TrackingSession(model, frames)
    s.adopt_labels(kept)
    np.testing.assert_array_equal(s.labels, kept)
    assert s.new_object_id() == 8
    with pytest.raises(ValueError, match="do not fit"):
        s.adopt_labels(kept[:3])
