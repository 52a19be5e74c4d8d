"""Prompt-and-track panel: clicks/boxes per cell, instant previews, tracking that streams into a
labels layer with progress and Cancel, corrections, divisions, deletion, undo, lineage tracks.

Key bindings on the clicks and tracking layers: ``n`` new cell, ``x`` flips click polarity
(negative clicks mark "not this cell").
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Tracks
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..ctc.napari_layers import META_KEY, PARENTS_KEY, layer_meta, tracks_from_labels
from ..tracking import DIRECTIONS, PointPrompt, TrackingSession
from .layer_combo import LayerCombo
from .prompt_layers import PromptLayers
from .state import DockState
from .workers import yield_cpu_to_gui

LABELS_NAME = "cellsam2 tracking"
TRACKS_NAME = "cellsam2 lineage"


def _button(text: str, slot) -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(slot)
    return button


class TrackPanel(QWidget):
    """Everything between "click a cell" and "a tracked labels layer with lineage"."""

    def __init__(self, state: DockState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.session: TrackingSession | None = None
        self.prompts: PromptLayers | None = None
        self.labels_layer: Labels | None = None
        self.worker = None
        self._undo = None  # a TrackingSession snapshot from before the last tracking action
        self._dividing = False
        self.pending_previews = 0  # previews queued or running (tests and scripts wait on it)
        self._daughter_clicks: list[tuple[float, float]] = []
        self.image = LayerCombo(state.viewer, Image)
        self.seed_layer = LayerCombo(state.viewer, Labels)
        self.cell = QSpinBox()
        self.cell.setRange(1, 65535)
        self.negative = QCheckBox("negative clicks (x)")
        self.negative.toggled.connect(lambda on: self.prompts and self.prompts.set_positive(not on))
        self.auto_divide = QCheckBox("detect divisions automatically")
        self.direction = QComboBox()
        self.direction.addItems(DIRECTIONS)
        self.direction.setCurrentText("both")
        self.start_frame, self.end_frame = QSpinBox(), QSpinBox()
        for box in (self.start_frame, self.end_frame):
            box.setRange(-1, 1_000_000)
            box.setValue(-1)
            box.setSpecialValueText("auto")
        self.status = QLabel("load a model, pick the image, start a session")
        self.status.setWordWrap(True)
        self.track_button = _button("Track", self.track)
        self.cancel_button = _button("Cancel", self.cancel)
        self.cancel_button.setEnabled(False)

        grid = QGridLayout()
        actions = [
            ("Start session", self.start_session), ("New cell (n)", self.new_cell),
            ("Seed from labels", self.seed), ("Use painted frame", self.use_painted),
            ("Divide cell", self.begin_divide), ("Delete cell", self.delete_cell),
            ("Undo", self.undo),
        ]  # fmt: skip
        for i, (text, slot) in enumerate(actions):
            grid.addWidget(_button(text, slot), i // 2, i % 2)
        grid.addWidget(self.track_button, 4, 0)
        grid.addWidget(self.cancel_button, 4, 1)
        form = QFormLayout(self)
        form.addRow("Image", self.image)
        form.addRow("Seed labels", self.seed_layer)
        form.addRow("Cell ID", self.cell)
        form.addRow("", self.negative)
        form.addRow("", self.auto_divide)
        form.addRow("Direction", self.direction)
        form.addRow("From frame", self.start_frame)
        form.addRow("To frame", self.end_frame)
        form.addRow(grid)
        form.addRow(self.status)

    # ---- session ----------------------------------------------------------------------------
    def current_frame(self) -> int:
        return int(self.state.viewer.dims.current_step[0])

    def start_session(self) -> None:
        image = self.image.layer()
        if self.state.model is None or image is None:
            show_error("load a model (Model panel) and choose a (T, Y, X) image layer first")
            return
        first = int((image.metadata.get(META_KEY) or {}).get("first_frame", 0))
        try:
            self.session = TrackingSession(
                self.state.model, image.data, auto_divide=self.auto_divide.isChecked(),
                first_frame=first,
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            show_error(str(exc))
            return
        viewer = self.state.viewer
        if LABELS_NAME in viewer.layers:
            viewer.layers.remove(LABELS_NAME)
        meta = layer_meta("res", sequence=image.name, first_frame=first)
        meta[PARENTS_KEY] = {}
        self.labels_layer = viewer.add_labels(self.session.labels, name=LABELS_NAME, metadata=meta)
        self.prompts = PromptLayers(viewer, self.on_click, self.on_box)
        self.prompts.set_positive(not self.negative.isChecked())
        for layer in (self.prompts.points, self.labels_layer):
            layer.bind_key("n", lambda _layer: self.new_cell(), overwrite=True)
            layer.bind_key("x", lambda _layer: self.negative.toggle(), overwrite=True)
        self.prompts.select_points()
        self.cell.setValue(self.session.new_object_id())
        self.status.setText(f"session on '{image.name}' ({self.session.num_frames} frames)")

    def _require_session(self) -> TrackingSession | None:
        if self.session is None:
            show_error("start a session first")
        return self.session

    def new_cell(self) -> None:
        if self._require_session():
            self.cell.setValue(self.session.new_object_id())
            self.status.setText(f"click cell {self.cell.value()}")

    # ---- prompts (instant preview in a worker) ----------------------------------------------
    def on_click(self, frame: int, x: float, y: float, positive: bool) -> None:
        if not self._require_session():
            return
        if self._dividing:
            self._daughter_clicks.append((x, y))
            if len(self._daughter_clicks) == 2:
                self._finish_divide(frame)
            return
        self._guard(lambda: self.session.add_points(self.cell.value(), frame, [[x, y]],
                                                    [1 if positive else 0]), frame)  # fmt: skip

    def on_box(self, frame: int, box: tuple[float, float, float, float]) -> None:
        if self._require_session():
            self._guard(lambda: self.session.add_box(self.cell.value(), frame, box), frame)

    def _guard(self, action, frame: int) -> None:
        """Apply a prompt (errors become notifications; the session stays usable), then preview."""
        try:
            action()
        except ValueError as exc:
            show_error(str(exc))
            return
        self.preview(frame)

    def preview(self, frame: int) -> None:
        self.pending_previews += 1
        worker = thread_worker(self.session.predict_frame, start_thread=False)(frame)
        worker.returned.connect(lambda _masks: self._refresh())
        worker.errored.connect(lambda exc: show_error(str(exc)))
        worker.finished.connect(self._preview_done)
        worker.start()

    def _preview_done(self) -> None:
        self.pending_previews -= 1

    def seed(self) -> None:
        layer = self.seed_layer.layer()
        if self._require_session() and layer is not None:
            t = self.current_frame()
            self._snapshot()
            self._guard(lambda: self.session.seed_from_labels(t, np.asarray(layer.data[t])), t)

    def use_painted(self) -> None:
        """Hand-painted corrections on the current frame become mask prompts for re-tracking."""
        if self._require_session():
            t = self.current_frame()
            self.session.sync_labels()  # paint edits elsewhere count for export and lineage
            painted = np.array(self.session.labels[t])
            self._snapshot()
            self._guard(lambda: self.session.seed_from_labels(t, painted), t)

    # ---- divisions, deletion, undo ----------------------------------------------------------
    def begin_divide(self) -> None:
        if self._require_session():
            self._dividing, self._daughter_clicks = True, []
            self.prompts.select_points()
            self.status.setText(f"click the two daughters of cell {self.cell.value()}")

    def _finish_divide(self, frame: int) -> None:
        clicks, self._dividing, self._daughter_clicks = self._daughter_clicks, False, []
        prompts = [PointPrompt(np.array([c]), np.array([1])) for c in clicks]
        self._snapshot()
        try:
            daughters = self.session.divide(self.cell.value(), frame, prompts)
        except ValueError as exc:
            show_error(str(exc))
            return
        self.status.setText(f"cell {self.cell.value()} divides into {daughters} on frame {frame}")
        self.preview(frame)

    def delete_cell(self) -> None:
        if self._require_session():
            self._snapshot()
            self._guard(lambda: self.session.remove_object(self.cell.value()),
                        self.current_frame())  # fmt: skip

    def _snapshot(self) -> None:
        self._undo = self.session.snapshot()

    def undo(self) -> None:
        """Return the session (labels, cells, prompts, divisions, SAM 2 memory) to before the
        last tracking action."""
        if self.session is None or self._undo is None:
            show_info("nothing to undo")
            return
        self.session.restore(self._undo)
        self._undo = None
        self._refresh()
        self.update_lineage()

    # ---- tracking ----------------------------------------------------------------------------
    def track(self) -> None:
        if not self._require_session():
            return
        start = self.start_frame.value() if self.start_frame.value() >= 0 else None
        end = self.end_frame.value() if self.end_frame.value() >= 0 else None
        self.session.auto_divide = self.auto_divide.isChecked()
        try:
            run = self.session.propagate(self.direction.currentText(), start=start, end=end)
        except ValueError as exc:
            show_error(str(exc))
            return
        self._snapshot()
        self._bar = progress(total=len(run), desc="tracking")
        def stream():
            yield_cpu_to_gui()
            yield from run

        worker = thread_worker(stream, start_thread=False)()
        worker.yielded.connect(self.on_frame)
        worker.errored.connect(lambda exc: show_error(f"tracking stopped: {exc}"))
        worker.finished.connect(self._tracking_done)
        self.worker = worker
        self.track_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.state.set_busy(True)
        worker.start()

    def on_frame(self, result) -> None:
        self._bar.update(1)
        self._refresh()
        self.status.setText(f"tracked frame {result.frame} ({len(result.object_ids)} cells)")

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _tracking_done(self) -> None:
        self._bar.close()
        self.worker = None
        self.track_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._refresh()
        self.update_lineage()  # ends the busy state once the lineage is shown

    def _refresh(self) -> None:
        if self.labels_layer is not None:
            self.labels_layer.refresh()

    def update_lineage(self) -> None:
        """Parent links into the labels layer's metadata and a Tracks layer of the lineage;
        the centroids (one read of every frame) are computed in a worker."""
        s = self.session
        parents = {i: s.parent(i) for i in s.object_ids if s.parent(i)}
        self.labels_layer.metadata[PARENTS_KEY] = parents
        worker = thread_worker(tracks_from_labels, start_thread=False)(s.labels, parents)
        worker.returned.connect(lambda tracks: self._show_tracks(*tracks, parents))
        worker.errored.connect(lambda exc: show_error(str(exc)))
        worker.finished.connect(lambda: self.state.set_busy(False))
        self.lineage_worker = worker
        self.state.set_busy(True)
        worker.start()

    def _show_tracks(self, data: np.ndarray, graph: dict, parents: dict[int, int]) -> None:
        viewer = self.state.viewer
        if TRACKS_NAME in viewer.layers:
            viewer.layers.remove(TRACKS_NAME)
        if len(data):
            meta = layer_meta("tracks", of="res")
            meta[PARENTS_KEY] = parents
            viewer.add_layer(Tracks(data, graph=graph, name=TRACKS_NAME, metadata=meta))
