"""Issue 11 in the dock: nothing the user made is ever lost, every failure says why, once, and
a click never freezes the viewer (pytest-qt, Xvfb, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_cellsam2.widgets import CellSAM2Widget, model_panel, session_restart
from napari_cellsam2.widgets.track_form import DIRECTIONS, PRECISIONS
from napari_cellsam2.widgets.track_panel import LABELS_NAME

pytestmark = pytest.mark.gui


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellsam2", "mother_machine")
    widget = CellSAM2Widget(viewer)
    viewer.window.add_dock_widget(widget, name="CellSAM2")
    with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
        widget.model_panel.load("tiny")
    _wait_idle(qtbot, widget)
    widget.track_panel.image.select("mother machine")
    return viewer, widget


@pytest.fixture
def errors():
    """Error notifications shown while the test runs (each one the user would see)."""
    seen = []

    def note(notification) -> None:
        if notification.severity == NotificationSeverity.ERROR:
            seen.append(str(notification.message))

    notification_manager.notification_ready.connect(note)
    yield seen
    notification_manager.notification_ready.disconnect(note)


def _wait_idle(qtbot, widget, timeout=60_000) -> None:
    track = widget.track_panel
    qtbot.waitUntil(lambda: not widget.state.busy and track.pending_previews == 0, timeout=timeout)


def _click_cell(viewer, widget, qtbot, label: int, frame: int = 0) -> None:
    gt = np.asarray(viewer.layers["mother machine TRA"].data[frame])
    ys, xs = np.nonzero(gt == label)
    widget.track_panel.cell.setValue(label)
    widget.track_panel.prompts.points.add([frame, ys.mean(), xs.mean()])
    _wait_idle(qtbot, widget)


def _session_with_two_cells(viewer, widget, qtbot) -> np.ndarray:
    widget.track_panel.start_session()
    for label in (1, 2):
        _click_cell(viewer, widget, qtbot, label)
    labels = np.array(viewer.layers[LABELS_NAME].data)
    assert np.count_nonzero(labels) > 0
    return labels


# ---- item 2: Start session over results asks; Undo reaches back across the restart ------------
def test_start_session_over_results_asks_and_nothing_is_lost(dock, qtbot, monkeypatch):
    viewer, widget = dock
    track = widget.track_panel
    before = _session_with_two_cells(viewer, widget, qtbot)
    first_session = track.session
    asked = []

    def answer(choice):
        def ask(_parent, pixels, can_seed):
            asked.append((pixels, can_seed))
            return choice

        monkeypatch.setattr(session_restart, "ask_about_results", ask)

    answer(None)  # cancel: nothing changes
    track.start_session()
    assert asked == [(np.count_nonzero(before), True)] and track.session is first_session

    answer(session_restart.DISCARD)
    track.start_session()
    layer = viewer.layers[LABELS_NAME]
    assert track.session is not first_session and not layer.data.any()
    track.undo()  # reaches back across the restart
    assert track.session is first_session
    np.testing.assert_array_equal(viewer.layers[LABELS_NAME].data, before)

    answer(session_restart.KEEP_AS_SEED)
    track.start_session()
    _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers[LABELS_NAME].data, before)
    assert track.session is not first_session and track.cell.value() > before.max()

    answer(session_restart.KEEP_AS_LAYER)
    track.start_session()
    kept = viewer.layers[f"{LABELS_NAME} (previous)"]
    np.testing.assert_array_equal(kept.data, before)
    assert not viewer.layers[LABELS_NAME].data.any()


# ---- item 3: a failed start leaves no session that acts on another image -----------------------
def test_a_failed_start_leaves_no_session(dock, qtbot, errors):
    viewer, widget = dock
    track = widget.track_panel
    _session_with_two_cells(viewer, widget, qtbot)
    viewer.add_image(np.zeros((3, 4, 32, 32), np.float32), name="z-stack")
    track.image.select("z-stack")
    track.start_session()
    assert track.session is None and "z-stack" in track.status.text()
    assert len(errors) == 1
    tracked = np.array(viewer.layers[LABELS_NAME].data)
    track.track()
    _wait_idle(qtbot, widget)
    assert track.worker is None and "start a session" in track.status.text()
    np.testing.assert_array_equal(viewer.layers[LABELS_NAME].data, tracked)  # nothing lost


# ---- item 5: a click never waits for the image encoder --------------------------------------
def test_clicks_and_track_never_wait_for_a_slow_encoder(dock, qtbot, monkeypatch):
    viewer, widget = dock
    track = widget.track_panel
    track.start_session()
    model = track.session.model
    encode, entered, release = model.get_image_features, threading.Event(), threading.Event()
    released = []

    def held_encode(*args, **kwargs):  # a big model on a CPU: held until the GUI lets it go
        entered.set()
        released.append(release.wait(10))
        return encode(*args, **kwargs)

    monkeypatch.setattr(model, "get_image_features", held_encode)
    viewer.dims.set_current_step(0, 5)  # the panel prefetches frame 5 after 300 ms
    qtbot.waitUntil(entered.is_set, timeout=5_000)
    gt = np.asarray(viewer.layers["mother machine TRA"].data[5])
    ys, xs = np.nonzero(gt == 1)
    track.cell.setValue(1)
    track.prompts.points.add([5, ys.mean(), xs.mean()])  # while frame 5 is being encoded
    track.direction.setCurrentText("forward")
    track.end_frame.setValue(6)
    track.track()  # queued behind the click's preview
    # the GUI's timers and queued callbacks run here; one that waited for the encoder (or for a
    # lock its worker holds) would block this thread until the encoder's wait gave up
    qtbot.wait(500)
    release.set()
    _wait_idle(qtbot, widget)
    # two encodes: frame 5 once (the preview waited for the prefetch), frame 6
    assert released == [True, True], "the GUI thread waited for the image encoder"
    assert 1 in np.unique(viewer.layers[LABELS_NAME].data[6])


# ---- items 6 and 7: one notification per failure, and no stale text ---------------------------
def test_a_failed_load_says_why_once(make_napari_viewer, qtbot, monkeypatch, errors):
    from napari_cellsam2.model import loading

    def unavailable(spec, device):
        raise loading.ModelNotAvailableError(f"{spec} is not cached: run hf download {spec}")

    monkeypatch.setattr(loading, "load_model", unavailable)
    widget = CellSAM2Widget(make_napari_viewer())
    widget.model_panel.load("facebook/sam2.1-hiera-tiny")
    qtbot.waitUntil(lambda: not widget.state.busy, timeout=10_000)
    qtbot.wait(100)
    assert errors == ["facebook/sam2.1-hiera-tiny is not cached: run hf download "
                      "facebook/sam2.1-hiera-tiny"]  # fmt: skip
    assert "could not load" in widget.model_panel.status.text()


def test_a_failed_tracking_run_says_why_once_and_clears_its_progress(
    dock, qtbot, monkeypatch, errors
):
    viewer, widget = dock
    track = widget.track_panel
    _session_with_two_cells(viewer, widget, qtbot)
    track.end_frame.setValue(2)
    track.direction.setCurrentText("forward")
    track.track()
    _wait_idle(qtbot, widget)
    assert track.bar.value() == track.bar.maximum() == 3  # the Track tab's own progress bar

    def broken(*_args, **_kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(track.session, "propagate", broken)
    track.start_frame.setValue(0)
    track.track()
    _wait_idle(qtbot, widget)
    assert errors == ["tracking stopped: out of memory"]
    assert track.status.text() == "tracking stopped: out of memory"
    assert track.bar.value() <= 0  # the previous run's count is gone


# ---- item 8: Track with nothing to track says so ---------------------------------------------
def test_a_warning_inside_a_job_reaches_the_user_once(make_napari_viewer, qtbot):
    """superqt's workers only emit warnings (an empty result's "no tracks" vanished);
    library deprecation warnings stay out of the user's notifications."""
    from napari_cellsam2.widgets.state import DockState

    seen = []

    def note(notification) -> None:
        if notification.severity == NotificationSeverity.WARNING:
            seen.append(str(notification.message))

    def job():
        for _ in range(2):
            warnings.warn("result has no tracks", UserWarning, stacklevel=1)
        warnings.warn("old API", FutureWarning, stacklevel=1)
        return 1

    state, got = DockState(make_napari_viewer()), []
    notification_manager.notification_ready.connect(note)
    try:
        state.run_job(job, on_return=got.append)
        qtbot.waitUntil(lambda: not state.busy, timeout=60_000)
    finally:
        notification_manager.notification_ready.disconnect(note)
    assert got == [1] and seen == ["result has no tracks"]


def test_experiments_are_found_off_the_gui_thread(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """ "Experiments…" searches a folder tree (seconds on a big or network drive) in a worker
    and lists every checkpoint it finds with its kind."""
    for run, kind in (("a", "lora"), ("b", "full")):
        folder = tmp_path / run / "checkpoints" / "best"
        folder.mkdir(parents=True)
        (folder / "cellsam2.json").write_text(json.dumps({"kind": kind}))
    scanned_on = []
    search = model_panel.find_checkpoints
    monkeypatch.setattr(
        model_panel,
        "find_checkpoints",
        lambda folder: scanned_on.append(threading.current_thread()) or search(folder),
    )
    widget = CellSAM2Widget(make_napari_viewer())
    panel = widget.model_panel
    before = panel.spec.count()
    panel.add_experiments(tmp_path)
    qtbot.waitUntil(lambda: panel.spec.count() == before + 2, timeout=10_000)
    labels = [panel.spec.itemText(i) for i in range(panel.spec.count())]
    assert "checkpoints/best (lora)" in labels and "checkpoints/best (full)" in labels
    assert scanned_on and scanned_on[0] is not threading.main_thread()


def test_track_without_prompts_says_so(dock, qtbot):
    _viewer, widget = dock
    track = widget.track_panel
    track.start_session()
    track.track()
    _wait_idle(qtbot, widget)
    assert "nothing to track" in track.status.text()


# ---- item 9: a refused click leaves no point behind ------------------------------------------
def test_a_click_outside_the_image_is_removed(dock, qtbot, errors):
    _viewer, widget = dock
    track = widget.track_panel
    track.start_session()
    track.prompts.points.add([0, 10, 500])  # x = 500 on a 32 px wide image
    qtbot.waitUntil(lambda: len(track.prompts.points.data) == 0, timeout=5_000)
    assert len(errors) == 1 and "outside the image" in errors[0]
    assert track.pending_previews == 0 and not track.session.object_ids


# ---- item 10: a longer image beside a short session ------------------------------------------
def test_a_longer_image_beside_a_short_session_raises_nothing(dock, qtbot, errors):
    viewer, widget = dock
    track = widget.track_panel
    viewer.add_image(np.random.default_rng(0).random((3, 64, 64), np.float32), name="short")
    track.image.select("short")
    track.start_session()
    viewer.add_image(np.zeros((20, 64, 64), np.float32), name="long")
    viewer.dims.set_current_step(0, 9)
    qtbot.wait(1_000)  # the prefetch timer fires after 300 ms
    _wait_idle(qtbot, widget)
    assert errors == []


# ---- items 12 and 13: the model panel, and a light dock ---------------------------------------
def test_random_weights_are_shown_whatever_the_checkpoint_kind(make_napari_viewer):
    widget = CellSAM2Widget(make_napari_viewer())
    model = SimpleNamespace(
        spec="runs/exp1/checkpoint-best", kind="lora", device="cpu", is_random=True,
        description="runs/exp1/checkpoint-best (RANDOM weights, for tests/benchmarks only)",
    )  # fmt: skip
    widget.state.set_model(model)
    status = widget.model_panel.status
    assert "RANDOM weights" in status.text() and status.styleSheet() == model_panel.RANDOM_STYLE


def test_opening_the_dock_does_not_import_torch():
    code = "import sys, napari_cellsam2.widgets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_dock_light_choices_match_the_tracker():
    from napari_cellsam2.model.device import PRECISIONS as REAL_PRECISIONS
    from napari_cellsam2.tracking import DIRECTIONS as REAL_DIRECTIONS

    assert (DIRECTIONS, PRECISIONS) == (REAL_DIRECTIONS, REAL_PRECISIONS)
