"""The dock end to end in a real napari viewer (pytest-qt, Xvfb), on the tiny model."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_cellsam2.widgets import CellSAM2Widget
from napari_cellsam2.widgets.track_panel import LABELS_NAME, TRACKS_NAME

pytestmark = pytest.mark.gui


class Ping:
    """Measures how long the Qt main thread keeps a 20 ms timer waiting."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last - 0.020)
        self.last = now

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


def _wait_idle(qtbot, state, timeout=120_000) -> None:
    qtbot.waitUntil(lambda: not state.busy, timeout=timeout)


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellsam2", "mother_machine")
    widget = CellSAM2Widget(viewer)
    viewer.window.add_dock_widget(widget, name="CellSAM2")
    model = widget.model_panel
    model.add_spec("tiny")
    with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
        model.load("tiny")
    _wait_idle(qtbot, widget.state)
    return viewer, widget


def _click(qtbot, panel, frame, x, y) -> None:
    panel.prompts.points.add([frame, y, x])
    qtbot.waitUntil(lambda: panel.pending_previews == 0, timeout=60_000)


def _gt_centre(viewer, frame, label):
    gt = np.asarray(viewer.layers["mother machine TRA"].data[frame])
    ys, xs = np.nonzero(gt == label)
    return float(xs.mean()), float(ys.mean())


def test_click_track_correct_and_export(dock, qtbot, tmp_path):
    viewer, widget = dock
    track = widget.track_panel
    track.image.select("mother machine")
    track.start_session()
    gt_frame0 = np.asarray(viewer.layers["mother machine TRA"].data[0])
    cells = [int(v) for v in np.unique(gt_frame0) if v][:2]
    for cell in cells:
        track.cell.setValue(cell)
        _click(qtbot, track, 0, *_gt_centre(viewer, 0, cell))
    labels = viewer.layers[LABELS_NAME]
    assert set(np.unique(labels.data[0])) >= set(cells)  # instant preview on the clicked frame

    ping = Ping()
    track.direction.setCurrentText("forward")
    track.track()
    _wait_idle(qtbot, widget.state)
    worst = ping.stop()
    frames = labels.data.shape[0]
    for t in range(frames):
        assert set(cells) <= set(np.unique(labels.data[t])), f"frame {t} lost a cell"
    assert worst < 0.2, f"main thread blocked {worst * 1000:.0f} ms while tracking"
    qtbot.waitUntil(lambda: TRACKS_NAME in viewer.layers, timeout=30_000)

    # a correction on a later frame re-tracks from there only
    before = np.array(labels.data[:10])
    track.cell.setValue(cells[0])
    _click(qtbot, track, 10, *_gt_centre(viewer, 10, cells[0]))
    track.track()
    _wait_idle(qtbot, widget.state)
    np.testing.assert_array_equal(labels.data[:10], before)

    export = widget.export_panel
    export.layer.select(LABELS_NAME)
    export.out.setText(str(tmp_path / "01_RES"))
    export.export("res")
    _wait_idle(qtbot, widget.state)
    assert (tmp_path / "01_RES" / "res_track.txt").exists()


def test_demo_without_cached_weights_offers_the_labelled_demo_model(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from napari_cellsam2.widgets import demo

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    warnings = []
    monkeypatch.setattr(demo, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    widget = demo.open_demo(viewer, load=False)
    assert [ly.name for ly in viewer.layers][:2] == ["mother machine", "mother machine TRA"]
    assert "hf download facebook/sam2.1-hiera-tiny" in warnings[0]
    assert widget.model_panel.current_spec() == "tiny"
    assert "demo" in widget.model_panel.spec.currentText()


def test_demo_prefers_cached_hub_weights(make_napari_viewer, tmp_path, monkeypatch):
    from napari_cellsam2.widgets import demo

    monkeypatch.setattr(demo, "hub_weights_cached", lambda repo: True)
    viewer = make_napari_viewer()
    widget = demo.open_demo(viewer, load=False)
    assert widget.model_panel.current_spec() == demo.DEFAULT_MODEL
