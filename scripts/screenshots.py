"""Regenerate the README/docs screenshots from a real napari window (run under Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

Opens the demo (synthetic mother machine + dock + the shipped ``demo`` model, trained on
synthetic data only), clicks each cell of frame 0 once (at its GT centre, as a user would),
tracks forward, fine-tunes LoRA from the layers for a few steps, and saves
docs/images/tracking.png and docs/images/finetune.png.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_cellsam2.widgets.demo import open_demo

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def wait(predicate, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() > end:
            raise TimeoutError("the demo did not finish in time")


def close_toasts() -> None:
    """Dismiss napari's notification pop-ups so they do not cover the picture."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for widget in QApplication.topLevelWidgets() + QApplication.allWidgets():
        if isinstance(widget, NapariQtNotification):
            widget.close()
    for _ in range(20):
        QApplication.processEvents()


def main() -> None:
    viewer = napari.Viewer(title="CellSAM2")
    viewer.window._qt_window.resize(1500, 950)
    widget = open_demo(viewer)
    state = widget.state
    wait(lambda: state.model is not None and not state.busy)
    track = widget.track_panel
    track.start_session()
    wait(lambda: not state.busy)
    viewer.dims.set_current_step(0, 0)
    gt = np.asarray(viewer.layers["mother machine TRA"].data[0])
    for cell in (int(v) for v in np.unique(gt) if v):
        ys, xs = np.nonzero(gt == cell)
        track.cell.setValue(cell)
        track.prompts.points.add([0, ys.mean(), xs.mean()])
        wait(lambda: track.pending_previews == 0 and not state.busy)
    track.direction.setCurrentText("forward")
    track.track()
    wait(lambda: not state.busy)
    wait(lambda: "cellsam2 lineage" in viewer.layers)
    viewer.layers["cellsam2 clicks"].visible = False
    viewer.layers["mother machine TRA"].visible = False
    viewer.layers["cellsam2 tracking"].contour = 1  # outlines: the image stays visible
    viewer.dims.set_current_step(0, 25)
    widget.tabs.setCurrentIndex(1)
    close_toasts()
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT / "tracking.png"), canvas_only=False)

    train = widget.train_panel
    train.labels.select("cellsam2 tracking")
    train.image.select("mother machine")
    train.epochs.setValue(3)
    train.steps.setValue(8)
    train.frames.setValue(3)
    train.log_dir.setText(tempfile.mkdtemp(prefix="cellsam2-shot-"))
    widget.tabs.setCurrentIndex(2)
    train.start()
    wait(lambda: not state.busy)
    train.plot.redraw()
    close_toasts()
    viewer.screenshot(str(OUT / "finetune.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
