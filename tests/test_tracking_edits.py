"""TrackingSession after edits: removed prompts, painted labels, deletions, adopted results,
detections and stopped re-runs leave a session that tracks and exports as if the edit had been
made on a fresh one (a random tiny SAM 2: machinery, not accuracy)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellsam2.ctc import open_path
from napari_cellsam2.ctc.repair import iter_export_labels
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import MaskPrompt, PointPrompt, TrackingSession
from napari_cellsam2.tracking.session import MAX_OBJECT_ID
from test_tracking import H, T, W, disk, make_frames


@pytest.fixture(scope="module")
def model():
    return build_random_model(tiny_config(64))


@pytest.fixture
def frames() -> np.ndarray:
    return make_frames()


class Found:
    """A detection as :meth:`TrackingSession.add_detections` reads it (its mask)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask


def two_cells(model, frames) -> TrackingSession:
    s = TrackingSession(model, frames)
    s.add_points(1, 0, [[14, 16]])
    s.add_box(2, 0, [37, 25, 51, 39])
    return s


def test_removing_the_earliest_prompt_forgets_the_memory_it_made(model, frames):
    edited = TrackingSession(model, frames)
    edited.add_points(1, 0, [[14, 16]])
    edited.add_points(1, 4, [[18, 16]])
    list(edited.propagate())
    edited.remove_prompts(1, 0)
    list(edited.propagate())
    fresh = TrackingSession(model, frames)
    fresh.add_points(1, 4, [[18, 16]])
    list(fresh.propagate())
    # frames 0-3 were tracked from the removed prompt; their memory must not steer 4-9
    np.testing.assert_array_equal(edited.labels[4:], fresh.labels[4:])
    assert not edited.labels[:4].any()


def test_a_stopped_rerun_resumes_where_it_stopped(model, frames):
    s = TrackingSession(model, frames, divisions="off")
    s.add_points(1, 0, [[14, 16]])
    list(s.propagate())
    rerun = s.propagate(start=3)  # everything is up to date: a forced re-run from frame 3
    for result in rerun:
        if result.frame == 5:
            break
    rerun.close()
    assert [r.frame for r in s.propagate()] == list(range(6, T))


def test_painted_labels_are_never_given_to_new_objects(model, frames):
    s = two_cells(model, frames)
    list(s.propagate())
    painted = int(s.labels.max()) + 1  # napari's next free label
    s.labels[2][40:46, 2:8] = painted
    s.sync_labels()
    daughters = s.divide(1, 5, [PointPrompt([[18, 12]]), MaskPrompt(disk(20, 21, 4))])
    assert painted not in daughters
    list(s.propagate())
    lineage = s.lineage()
    assert {lineage[d].parent for d in daughters} == {1}
    assert (lineage[painted].begin, lineage[painted].end, lineage[painted].parent) == (2, 2, 0)


def test_deleting_a_cell_also_erases_its_painted_pixels(model, frames):
    s = two_cells(model, frames)
    list(s.propagate(end=5))
    s.labels[8][40:46, 2:8] = 2  # painted on a frame it was never tracked on, no sync since
    s.remove_object(2)
    assert not (s.labels == 2).any() and 2 not in s.lineage()


def test_add_detections_adds_all_or_nothing(model, frames):
    s = TrackingSession(model, frames)
    with pytest.raises(ValueError, match="shape"):
        s.add_detections(0, [Found(disk(44, 32, 7)), Found(np.zeros((10, 10), bool))])
    assert s.object_ids == []
    s.add_points(MAX_OBJECT_ID - 1, 0, [[14, 16]])  # one ID left, two cells found
    with pytest.raises(ValueError, match="no object IDs left"):
        s.add_detections(0, [Found(disk(44, 32, 7)), Found(disk(30, 10, 5))])
    assert s.object_ids == [MAX_OBJECT_ID - 1]


def test_a_cell_found_while_tracking_has_no_past_to_fill(model, frames):
    s = TrackingSession(model, frames)
    s.add_points(1, 0, [[14, 16]])
    list(s.propagate())
    (new,) = s.add_detections(5, [Found(disk(44, 32, 7))], 1.0, starts_here=True)
    list(s.propagate())
    assert s.frame_range(new) == (5, T - 1)
    assert len(s.propagate("backward")) == 0  # everything is tracked: nothing to run


class _FailingFrames:
    """A lazy (T, H, W) labels source whose frame 6 cannot be read."""

    shape, dtype = (T, H, W), np.uint16

    def __getitem__(self, t: int) -> np.ndarray:
        if t == 6:
            raise OSError("frame 6: corrupt TIFF")
        frame = np.zeros((H, W), np.uint16)
        frame[2:8, 2:8] = 1
        return frame


def test_adopting_labels_is_all_or_nothing_and_refuses_what_uint16_cannot_hold(model, frames):
    s = TrackingSession(model, frames)
    with pytest.raises(OSError, match="frame 6"):
        s.adopt_labels(_FailingFrames())
    assert not s.labels.any() and s.new_object_id() == 1
    wide = np.zeros((T, H, W), np.uint32)
    wide[:, 2:8, 2:8] = 70000  # would wrap to 4464 in the session's uint16 labels
    with pytest.raises(ValueError, match=r"0\.\.70000"):
        s.adopt_labels(wide)
    assert not s.labels.any()
    top = np.zeros((T, H, W), np.uint16)
    top[:, 2:8, 2:8] = MAX_OBJECT_ID
    s.adopt_labels(top)
    with pytest.raises(ValueError, match="no object IDs left"):  # not a merge into the kept cell
        s.add_detections(0, [Found(disk(44, 32, 7))])


def test_an_export_writes_the_labels_as_they_were_when_it_started(model, frames, tmp_path):
    s = two_cells(model, frames)
    list(s.propagate(end=4))
    steps = iter_export_labels(tmp_path / "01_RES", s.labels, {}, 0, "res")
    next(steps)  # checked the lineage and wrote frame 0 ...
    list(s.propagate())  # ... while tracking wrote frames 5-9 of the same array
    for _ in steps:
        pass
    written = open_path(tmp_path / "01_RES")
    written.validate()
    assert not np.asarray(written.res.masks[9]).any()


def test_relabelling_gaps_for_a_result_never_touches_the_labels_it_was_taken_from(
    model, frames, tmp_path
):
    """The result and an export relabel a track's later part in their own copy of the labels
    (one copy each), never in the session's array or the layer's."""
    s = two_cells(model, frames)
    list(s.propagate())
    s.labels[4][s.labels[4] == 1] = 0  # a gap: cell 1's frames 5-9 become a linked track
    before = s.labels.copy()
    result = s.result()
    assert len(result.lineage) == 3 and set(np.unique(result.labels[5:])) - {0, 1, 2}
    np.testing.assert_array_equal(s.labels, before)
    export = iter_export_labels(tmp_path / "01_RES", s.labels, {}, 0, "res")
    for _ in export:
        pass
    np.testing.assert_array_equal(s.labels, before)
