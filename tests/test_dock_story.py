"""The whole user story twice in one viewer (issue 11): track -> fine-tune -> use the model ->
restart the session -> export, asserting that no labelled pixel is lost without an explicit
discard. The restart dialog is answered "keep as seed" the first time and "keep as a layer" the
second time; the export is compared with the layer it came from."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellsam2.ctc import read_res
from napari_cellsam2.widgets import session_restart
from napari_cellsam2.widgets.track_panel import LABELS_NAME
from test_dock import _start_with_two_cells, _train, _wait_idle

pytestmark = pytest.mark.gui


def _labelled(viewer) -> int:
    """Labelled pixels over every labels layer this plugin made (tracking results)."""
    return sum(
        int(np.count_nonzero(np.asarray(layer.data)))
        for layer in viewer.layers
        if layer.name.startswith(LABELS_NAME)
    )


def test_user_story_twice_loses_no_labelled_pixel(dock, qtbot, tmp_path, monkeypatch):
    viewer, widget = dock
    track = widget.track_panel
    _start_with_two_cells(viewer, widget, qtbot)
    for round_, answer in enumerate((session_restart.KEEP_AS_SEED, session_restart.KEEP_AS_LAYER)):
        track.direction.setCurrentText("forward")
        track.track()
        _wait_idle(qtbot, widget.state)
        tracked = _labelled(viewer)
        assert tracked > 0

        train = _train(widget, tmp_path / f"round{round_}")
        qtbot.waitUntil(
            lambda train=train: "training finished" in train.eta.text(), timeout=300_000
        )
        _wait_idle(qtbot, widget.state)
        with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
            train.use_model()
        _wait_idle(qtbot, widget.state)
        assert _labelled(viewer) == tracked  # a new model keeps what was tracked

        asked: list[tuple] = []

        def ask(*args, answer=answer, asked=asked):
            asked.append(args)
            return answer

        monkeypatch.setattr(session_restart, "ask_about_results", ask)
        track.start_session()
        _wait_idle(qtbot, widget.state)
        assert asked, "starting over existing results must ask"
        assert _labelled(viewer) == tracked, answer  # kept, as the user chose

        # export what holds the result: the session's layer (kept as seed) or the layer it
        # was moved to (kept as a layer); the RES written holds every labelled pixel
        layer = max(
            (ly for ly in viewer.layers if ly.name.startswith(LABELS_NAME)),
            key=lambda ly: np.count_nonzero(np.asarray(ly.data)),
        )
        export = widget.export_panel
        export.layer.select(layer.name)
        out = tmp_path / f"round{round_}" / "01_RES"
        export.out.setText(str(out))
        export.export("res")
        _wait_idle(qtbot, widget.state)
        written = np.stack([np.asarray(f) for f in read_res(out).masks])
        assert np.count_nonzero(written) == np.count_nonzero(np.asarray(layer.data)) > 0
