"""The simulated annotator (clicks until every frame of a track is right) and GT seeding.

Stand-in trackers with known behaviour check the click logic exactly; one run drives the real
tiny SAM 2 session through the same protocol.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellsam2.ctc import open_path
from napari_cellsam2.evaluation.annotator import (
    annotate,
    frame_ious,
    interior_point,
    next_click,
    summarize,
)
from napari_cellsam2.evaluation.seeding import gt_labels, track_sequence
from napari_cellsam2.model.loading import load_model


class Oracle:
    """Predicts the GT; counts clicks (there should be none)."""

    def __init__(self, gt: np.ndarray) -> None:
        self.gt, self.clicks = gt, []

    def labels(self) -> np.ndarray:
        return self.gt.copy()

    def click(self, track, frame, xy, positive) -> None:
        self.clicks.append((track, frame))


class FixOnClick:
    """Starts from ``start``; a click on (track, frame) makes that track right on that frame
    only (``propagates=False``: a poor tracker) or on that frame and every later one (a tracker
    that carries the correction forward)."""

    def __init__(self, gt: np.ndarray, start: np.ndarray, propagates: bool) -> None:
        self.gt, self.pred, self.propagates = gt, start.copy(), propagates
        self.clicks: list[tuple[int, int, tuple[float, float], bool]] = []

    def labels(self) -> np.ndarray:
        return self.pred

    def click(self, track, frame, xy, positive) -> None:
        self.clicks.append((track, frame, xy, positive))
        for t in range(frame, len(self.gt) if self.propagates else frame + 1):
            self.pred[t][self.pred[t] == track] = 0
            self.pred[t][self.gt[t] == track] = track


class Stubborn:
    """Predicts nothing, whatever the clicks."""

    def __init__(self, gt: np.ndarray) -> None:
        self.shape, self.clicks = gt.shape, 0

    def labels(self) -> np.ndarray:
        return np.zeros(self.shape, np.uint16)

    def click(self, track, frame, xy, positive) -> None:
        self.clicks += 1


def presence(gt: np.ndarray) -> dict[int, list[int]]:
    return {
        int(label): [t for t in range(len(gt)) if (gt[t] == label).any()]
        for label in np.unique(gt)
        if label
    }


def test_interior_point_is_deepest_inside_the_mask():
    mask = np.zeros((20, 30), bool)
    mask[4:11, 5:20] = True  # 7 x 15 block: deepest row 7, columns 8..16 tie -> first (8)
    assert interior_point(mask) == (8.0, 7.0)
    ell = np.zeros((20, 20), bool)
    ell[0:20, 0:4] = True
    ell[16:20, 0:20] = True
    x, y = interior_point(ell)
    assert ell[int(y), int(x)]
    touching = np.zeros((10, 10), bool)
    touching[:, :3] = True  # the frame border counts as outside: the middle column wins
    assert interior_point(touching)[0] == 1.0
    with pytest.raises(ValueError, match="non-empty 2-D mask"):
        interior_point(np.zeros((5, 5), bool))


def test_next_click_targets_the_largest_error_region():
    gt = np.zeros((30, 30), bool)
    gt[5:15, 5:15] = True
    half = gt.copy()
    half[:, 10:] = False  # misses a 10 x 5 part of the cell
    (x, y), positive = next_click(half, gt)
    assert positive and gt[int(y), int(x)] and not half[int(y), int(x)]

    extra = gt.copy()
    extra[20:28, 20:28] = True  # a 64-pixel false positive beats a 4-pixel miss
    extra[5:7, 5:7] = False
    (x, y), positive = next_click(extra, gt)
    assert not positive and 20 <= x < 28 and 20 <= y < 28
    assert next_click(gt, gt) is None


def test_oracle_needs_no_clicks(division_labels):
    oracle = Oracle(division_labels)
    efforts = annotate(oracle, division_labels, iou_threshold=0.9, max_clicks=5)
    assert oracle.clicks == []
    assert {e.track for e in efforts} == set(presence(division_labels))
    assert all(e.clicks == 0 and e.converged and e.final_min_iou == 1.0 for e in efforts)


def test_clicks_fall_as_the_tracker_gets_better(division_labels):
    gt = division_labels
    frames = presence(gt)
    empty = np.zeros_like(gt)
    poor = FixOnClick(gt, empty, propagates=False)
    good = FixOnClick(gt, empty, propagates=True)
    stubborn = Stubborn(gt)
    budget = 10
    counts = {}
    for name, tracker in (("oracle", Oracle(gt)), ("good", good), ("poor", poor)):
        efforts = annotate(tracker, gt, max_clicks=budget)
        assert all(e.converged for e in efforts)
        counts[name] = {e.track: e.clicks for e in efforts}
    stubborn_efforts = annotate(stubborn, gt, max_clicks=3)
    # one click on the earliest worst frame fixes a propagating tracker; the poor one needs a
    # click on every frame of every track; the stubborn one spends the whole budget
    assert counts["oracle"] == dict.fromkeys(frames, 0)
    assert counts["good"] == dict.fromkeys(frames, 1)
    assert counts["poor"] == {label: len(f) for label, f in frames.items()}
    assert [(e.clicks, e.converged) for e in stubborn_efforts] == [(3, False)] * len(frames)
    assert stubborn.clicks == 3 * len(frames)
    # tracks are done in order of their first frame, worst (earliest on ties) frame first
    assert [(c[0], c[1]) for c in poor.clicks] == [
        (label, t)
        for label, fs in sorted(frames.items(), key=lambda i: (i[1][0], i[0]))
        for t in fs
    ]
    assert all(positive and gt[t][int(y), int(x)] == k for k, t, (x, y), positive in poor.clicks)


def test_a_false_positive_gets_a_negative_click(division_labels):
    gt = division_labels
    start = gt.copy()
    start[2, 30:40, 0:12] = 4  # cell 4 wrongly spreads over a 120-pixel region on frame 2
    tracker = FixOnClick(gt, start, propagates=False)
    efforts = {e.track: e for e in annotate(tracker, gt, iou_threshold=0.95)}
    assert efforts[4].clicks == 1 and efforts[4].converged
    assert efforts[4].initial_min_iou < 0.95
    [(track, frame, (x, y), positive)] = tracker.clicks
    assert (track, frame, positive) == (4, 2, False)
    assert start[2][int(y), int(x)] == 4 and gt[2][int(y), int(x)] != 4


def test_summary_counts_corrections_per_track_and_per_100_frames(division_labels):
    gt = division_labels
    efforts = annotate(Stubborn(gt), gt, tracks=[1, 4], max_clicks=2)
    summary = summarize(efforts, movie_frames=len(gt), iou_threshold=0.8, max_clicks=2)
    assert (summary.tracks, summary.clicks) == (2, 4)
    assert summary.clicks_per_track == 2.0
    assert summary.clicks_per_100_frames == pytest.approx(100 * 4 / len(gt))
    assert summary.converged_fraction == 0.0 and summary.final_mean_iou == 0.0
    assert summary.track_frames == 3 + len(gt)  # track 1 lives on 3 frames, track 4 on all


def test_bad_annotator_input_is_named(division_labels):
    with pytest.raises(ValueError, match="not in the GT labels"):
        annotate(Oracle(division_labels), division_labels, tracks=[99])
    with pytest.raises(ValueError, match=r"\(T, Y, X\) integer labels"):
        annotate(Oracle(division_labels), division_labels[0])
    with pytest.raises(ValueError, match="iou_threshold"):
        annotate(Oracle(division_labels), division_labels, iou_threshold=0)
    wrong = Oracle(division_labels[:, :10])
    with pytest.raises(ValueError, match="tracker's labels have shape"):
        annotate(wrong, division_labels)
    assert frame_ious(division_labels, division_labels, 4, [0, 5]) == {0: 1.0, 5: 1.0}


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", "cpu")


def test_gt_mask_seeding_prompts_each_track_on_its_first_frame(ctc_sequence, tiny):
    seq = open_path(ctc_sequence)
    gt, lineage = gt_labels(seq)
    tracker = track_sequence(tiny, seq, "mask")
    session, ids = tracker.session, tracker.ids
    assert set(ids) == {1, 2, 3, 4}
    # the GT division becomes a session division: mother ends, daughters start on frame 3
    assert session.parent(ids[2]) == session.parent(ids[3]) == ids[1]
    assert session.frame_range(ids[1]) == (0, 2)
    assert session.frame_range(ids[2])[0] == session.frame_range(ids[3])[0] == 3
    assert session.result().lineage.parents == {ids[2]: ids[1], ids[3]: ids[1]}
    labels = tracker.labels()
    for track in lineage:
        t = track.begin
        assert session.prompt_frames(ids[track.label]) == [t]
        np.testing.assert_array_equal(labels[t] == track.label, gt[t] == track.label)
    # forward only: nothing is tracked before a track's first prompt
    assert not (labels[:3] == 2).any() and not (labels[:3] == 3).any()


def test_annotator_drives_the_real_sam2_session(ctc_sequence, tiny):
    seq = open_path(ctc_sequence)
    gt, _ = gt_labels(seq)
    tracker = track_sequence(tiny, seq, "click")
    assert all(len(tracker.session.prompt_frames(oid)) == 1 for oid in tracker.ids.values())
    efforts = annotate(tracker, gt, iou_threshold=0.8, max_clicks=2)
    assert {e.track for e in efforts} == {1, 2, 3, 4}
    assert sum(e.clicks for e in efforts) > 0  # a random model is not right on its own
    final = tracker.labels()
    for e in efforts:
        assert e.clicks <= 2
        assert e.converged == (e.final_min_iou >= 0.8)
        prompted = tracker.session.prompt_frames(tracker.ids[e.track])
        for c in e.click_log:
            assert c.frame in prompted  # the click reached SAM 2 on that frame
            assert (gt[c.frame][int(c.y), int(c.x)] == e.track) == c.positive
        frames = [t for t in range(len(gt)) if (gt[t] == e.track).any()]
        ious = frame_ious(final, gt, e.track, frames)
        if e.track == efforts[-1].track:  # nothing was clicked after the last track
            assert min(ious.values()) == pytest.approx(e.final_min_iou)


def test_a_model_that_divides_by_itself_is_annotated_by_gt_tracks(ctc_sequence, monkeypatch):
    """GT seeding places every GT division by hand; a model with a division head divides by
    default, and its own daughters had no GT track: the annotator indexed past its table."""
    import torch

    from napari_cellsam2.evaluation.compare import sequence_effort
    from napari_cellsam2.model.heads import attach_division_head
    from napari_cellsam2.model.loading import load_model
    from napari_cellsam2.tracking import session as session_module
    from napari_cellsam2.tracking.division_config import DivisionConfig
    from napari_cellsam2.tracking.divisions import learned_division

    eager = DivisionConfig(div_iou_thresh=0.0, div_presence_thresh=0.0)
    monkeypatch.setattr(
        session_module, "learned_division", lambda record, config: learned_division(record, eager)
    )
    model = load_model("tiny", "cpu")
    torch.nn.init.constant_(attach_division_head(model.model).score[-1].bias, 20.0)  # fires
    seq = open_path(ctc_sequence)
    tracker = track_sequence(model, seq, "click")
    assert set(np.unique(tracker.labels())) <= {0, *tracker.ids}
    assert len(sequence_effort(model, seq, 0.8, 2, tracker)) == len(tracker.ids)


def test_an_object_no_gt_track_names_reads_as_background(ctc_sequence, tiny):
    """SessionTracker is public: a session object outside its GT table (here a click on a new
    cell) must read as background, not index past the table (an IndexError before)."""
    seq = open_path(ctc_sequence)
    tracker = track_sequence(tiny, seq, "mask")
    before = tracker.labels()
    extra = tracker.session.new_object_id()
    tracker.session.add_points(extra, 0, [[2.0, 2.0]], [1])
    tracker.session.predict_frame(0)
    assert (tracker.session.labels[0] == extra).any()
    labels = tracker.labels()
    assert set(np.unique(labels)) <= {0, *tracker.ids}
    np.testing.assert_array_equal(labels[1:], before[1:])
