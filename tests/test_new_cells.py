"""Cells that appear on later frames (``tracking.new_cells``, ``track --detect-new-cells``).

SAM 2's masks are controlled (every object keeps the mask it was prompted with) and detection is
faked, so these tests check which frames are searched, when, and what becomes a new track; the
real detector is covered by ``test_detect.py``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import open_path
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import TrackingSession, track_with_new_cells
from napari_cellsam2.tracking import run as run_module
from napari_cellsam2.tracking.detect import Detection
from napari_cellsam2.tracking.new_cells import detection_frames

T, H, W = 6, 48, 64


@pytest.fixture(scope="module")
def model():
    return build_random_model(tiny_config(64))


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


OLD, NEW = box(8, 20, 8, 22), box(28, 42, 36, 54)  # tracked from frame 0 / enters on frame 3


def static_session(model, prompt_old: bool = True) -> TrackingSession:
    """A session whose objects keep their first prompt's mask on every frame they are computed
    on (SAM 2 still runs underneath for its memory), so any frame an object is tracked on,
    forward or backward, shows it."""
    rng = np.random.default_rng(0)
    session = TrackingSession(model, rng.normal(100, 5, (T, H, W)).astype(np.uint16))
    original = session._object_logits

    def fake(t, objs, pred_masks):
        logits = original(t, objs, pred_masks)
        for i, o in enumerate(objs):
            mask = o.prompts[min(o.prompts)].mask
            logits[i] = torch.from_numpy(np.where(mask, 50.0, -50.0))
        return logits

    session._object_logits = fake
    if prompt_old:
        session.add_mask(1, 0, OLD)
    return session


def fake_detect(session: TrackingSession, calls: list[int]):
    """The detector finds the old cell on every frame and the new one from frame 3 on."""

    def detect(frame, config=None):
        calls.append(frame)
        found = [Detection(OLD, (15, 14), 0.9, 5.0)]
        if frame >= 3:
            found.append(Detection(NEW, (45, 35), 0.8, 5.0))
        return found

    return detect


@pytest.mark.parametrize("direction", ["forward", "both"])
def test_a_cell_found_later_is_tracked_from_that_frame_on_only(model, direction, monkeypatch):
    session = static_session(model)
    calls: list[int] = []
    monkeypatch.setattr(session, "detect", fake_detect(session, calls))
    run = track_with_new_cells(session, 1, direction=direction)
    results = list(run)
    assert calls == [1, 2, 3, 4, 5]
    # the old cell is under its tracked mask on every searched frame: never added again
    assert run.added == {1: [], 2: [], 3: [2], 4: [], 5: []} and run.new_ids == [2]
    assert session.object_ids == [1, 2] and session.parent(2) == 0
    assert not (session.labels[:3] == 2).any()  # not tracked backward into frames 0..2
    for t in range(3, T):
        np.testing.assert_array_equal(session.labels[t] == 2, NEW)
    for t in range(T):
        np.testing.assert_array_equal(session.labels[t] == 1, OLD)
    lineage = session.lineage()
    assert (lineage[2].begin, lineage[2].end, lineage[2].parent) == (3, T - 1, 0)
    assert (lineage[1].begin, lineage[1].end) == (0, T - 1)
    assert {r.frame for r in results} == set(range(T))
    assert [r.frame for r in results].count(3) == 2  # tracked, then again with the new cell


def test_cells_appearing_in_an_empty_movie_are_found(model, monkeypatch):
    session = static_session(model, prompt_old=False)  # e.g. --prompts auto found nothing
    calls: list[int] = []
    monkeypatch.setattr(session, "detect", fake_detect(session, calls))
    run = track_with_new_cells(session, 2)
    list(run)
    assert calls == [2, 4]
    assert run.added == {2: [1], 4: [2]}  # the old cell on 2, the new one on 4
    lineage = session.lineage()
    assert lineage[1].begin == 2 and lineage[2].begin == 4
    assert not session.labels[:2].any()


def test_every_0_adds_nothing(model, monkeypatch):
    session = static_session(model)
    calls: list[int] = []
    monkeypatch.setattr(session, "detect", fake_detect(session, calls))
    run = track_with_new_cells(session, 0, direction="both")
    results = list(run)
    assert calls == [] and run.added == {} and session.object_ids == [1]
    assert sorted(r.frame for r in results) == list(range(T))
    assert detection_frames(T, 0) == [] and detection_frames(10, 3) == [3, 6, 9]


def test_stopping_leaves_a_session_that_resumes(model, monkeypatch):
    session = static_session(model)
    calls: list[int] = []
    monkeypatch.setattr(session, "detect", fake_detect(session, calls))
    run = track_with_new_cells(session, 3)
    assert [next(run).frame for _ in range(3)] == [0, 1, 2]
    run.close()
    assert calls == [] and not session.labels[3:].any()
    assert [r.frame for r in session.propagate("forward")] == [3, 4, 5]


@pytest.mark.parametrize(
    ("every", "direction", "match"),
    [(-1, "forward", "N >= 0"), (True, "forward", "N >= 0"), (2, "backward", "forward")],
)
def test_bad_options_are_refused_before_anything_runs(model, every, direction, match):
    session = static_session(model)
    with pytest.raises(ValueError, match=match):
        track_with_new_cells(session, every, direction=direction)
    assert not session.labels.any()
    list(track_with_new_cells(session, 0, direction="backward"))  # nothing to detect: fine


def test_cli_flag_reaches_the_tracker(ctc_sequence: Path, tmp_path: Path, capsys, monkeypatch):
    seen = []

    def spy(session, every, config=None, **kw):
        seen.append((every, kw["direction"], config.points_per_side))
        return track_with_new_cells(session, every, config, **kw)

    monkeypatch.setattr(run_module, "track_with_new_cells", spy)
    out = tmp_path / "01_RES"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "gt-first-frame"]
    argv += ["--out", str(out), "--device", "cpu", "--detect-points-per-side", "4"]
    assert main([*argv, "--detect-new-cells", "2"]) == 0, capsys.readouterr().err
    assert seen == [(2, "both", 4)]
    assert "new cells on later frames (searched every 2 frames)" in capsys.readouterr().err
    open_path(out).validate()
    assert main([*argv, "--overwrite"]) == 0  # default 0: off
    assert len(seen) == 1


def test_cli_refuses_bad_values(ctc_sequence: Path, tmp_path: Path, capsys):
    out = tmp_path / "01_RES"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "auto", "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--detect-new-cells", "-1"])
    assert exc.value.code == 2
    assert "--detect-new-cells: expected an integer >= 0" in capsys.readouterr().err
    assert main([*argv, "--detect-new-cells", "1", "--direction", "backward"]) == 2
    assert "not 'backward'" in capsys.readouterr().err
    assert not out.exists()


def test_a_new_cell_is_never_tracked_before_it_was_found(model, monkeypatch):
    session = static_session(model)
    monkeypatch.setattr(session, "detect", fake_detect(session, []))
    list(track_with_new_cells(session, 1))
    list(session.propagate("both", obj_ids=[2]))  # e.g. the dock's Track, later
    assert not (session.labels[:3] == 2).any()
    assert session.lineage()[2].begin == 3


def test_both_tracks_the_given_prompts_both_ways_before_the_first_search(model, monkeypatch):
    """With "both", the caller's prompts are tracked forward and then backward, the session's
    own order, before any frame is searched. Backward first gave a cell prompted mid-movie a
    memory of absent frames before its prompt: with the demo model it lost its cell after the
    prompt frame and detection added it again (scripts/new_cells_order_probe.py)."""
    session = static_session(model)
    session.add_mask(3, 4, NEW)  # a cell first prompted on frame 4
    calls: list[int] = []
    monkeypatch.setattr(session, "detect", fake_detect(session, calls))
    order = []
    for result in track_with_new_cells(session, 2, direction="both"):
        order.append((result.frame, len(calls)))
    before_search = [frame for frame, searched in order if searched == 0]
    assert before_search == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0]  # forward, then backward
    assert calls == [2, 4] and session.lineage()[3].begin == 0


def test_forward_only_with_a_later_prompt_warns_of_doubles(model):
    session = static_session(model)
    session.add_mask(3, 4, NEW)
    with pytest.warns(UserWarning, match=r"cell\(s\) 3 are first prompted after frame 2"):
        track_with_new_cells(session, 2, direction="forward")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        track_with_new_cells(session, 5, direction="forward")  # searched after the prompt
        track_with_new_cells(session, 2, direction="both")
