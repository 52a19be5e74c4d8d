"""Prompt-and-track panel: clicks/boxes per cell, instant previews, tracking that streams into a
labels layer with progress and Cancel, corrections, divisions, deletion, undo, lineage tracks.

Key bindings on the clicks and tracking layers: ``n`` new cell, ``x`` flips click polarity
(negative clicks mark "not this cell").
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QWidget,
)

from ..ctc.napari_layers import META_KEY, PARENTS_KEY, layer_meta
from ..tracking import TrackingSession
from .cell_edits import CellEdits
from .lineage_view import LineageView
from .prompt_layers import PromptLayers
from .state import DockState
from .track_form import build_track_form
from .workers import yield_cpu_to_gui

LABELS_NAME = "cellsam2 tracking"


class TrackPanel(CellEdits, QWidget):
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
        self.lineage_view = LineageView(state)
        self.pending_previews = 0  # previews queued or running (tests and scripts wait on it)
        self._daughter_clicks: list[tuple[int, float, float]] = []
        actions = [
            ("Start session", self.start_session), ("New cell (n)", self.new_cell),
            ("Seed from labels", self.seed), ("Use painted frame", self.use_painted),
            ("Divide cell", self.begin_divide), ("Delete cell", self.delete_cell),
            ("Undo", self.undo),
        ]  # fmt: skip
        build_track_form(self, state.viewer, actions)
        self.negative.toggled.connect(lambda on: self.prompts and self.prompts.set_positive(not on))
        self.precision.currentTextChanged.connect(self._set_precision)
        self._prefetch_timer = QTimer(self)
        self._prefetch_timer.setSingleShot(True)
        self._prefetch_timer.setInterval(300)  # the user settled on a frame
        self._prefetch_timer.timeout.connect(self._prefetch)
        state.viewer.dims.events.current_step.connect(lambda _e: self._prefetch_timer.start())
        state.busy_changed.connect(self._busy)
        state.model_changed.connect(self._model_changed)

    def _busy(self, busy: bool) -> None:
        """While a job runs, session-changing actions wait (Cancel stays available)."""
        for button in [*self.action_buttons, self.track_button]:
            button.setEnabled(not busy)
        if self.labels_layer is not None:
            self.labels_layer.editable = not busy

    def _prefetch(self) -> None:
        """Encode the frame the user moved to in the background, so the first click there
        only runs SAM 2's prompt encoder and mask decoder."""
        if self.session is not None and not self.state.busy:
            self.state.run_job(  # errors surface with the next preview or click
                self.session.prefetch, self.current_frame(), on_error=lambda _exc: None, busy=False
            )

    def _model_changed(self, _model) -> None:
        """A new model (e.g. "Use this model" after fine-tuning) takes over the session; the
        tracked labels and their lineage stay, new clicks and tracking use the new model."""
        if self.session is not None:
            self.start_session(keep_labels=True)

    def _set_precision(self, value: str) -> None:
        """Applies from the next frame computed, also while tracking runs."""
        if self.session is None:
            return
        try:
            self.session.precision = value
        except ValueError as exc:  # bf16 without CUDA
            show_error(str(exc))
            self.precision.setCurrentText(self.session.precision)

    # ---- session ----------------------------------------------------------------------------
    def current_frame(self) -> int:
        return int(self.state.viewer.dims.current_step[0])

    def start_session(self, keep_labels: bool = False) -> None:
        """A new session on the chosen image; ``keep_labels`` carries the current tracking
        layer (results, corrections, lineage) over instead of starting empty."""
        image = self.image.layer()
        if self.state.model is None or image is None:
            show_error("load a model (Model panel) and choose a (T, Y, X) image layer first")
            return
        first = int((image.metadata.get(META_KEY) or {}).get("first_frame", 0))
        try:
            self.session = TrackingSession(
                self.state.model, image.data, auto_divide=self.auto_divide.isChecked(),
                first_frame=first, precision=self.precision.currentText(),
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            show_error(str(exc))
            return
        viewer = self.state.viewer
        old = viewer.layers[LABELS_NAME] if LABELS_NAME in viewer.layers else None  # noqa: SIM401
        if keep_labels and old is not None and old.data.shape == self.session.labels.shape:
            self.session.labels[...] = old.data  # no objects yet: nothing else to count
            old.data = self.session.labels
            self.labels_layer = old
        else:
            meta = layer_meta("res", sequence=image.name, first_frame=first)
            meta[PARENTS_KEY] = {}
            if old is not None:  # reused: removing a layer costs a full GC on the GUI thread
                old.data, old.metadata = self.session.labels, meta
                self.labels_layer = old
            else:
                self.labels_layer = viewer.add_labels(
                    self.session.labels, name=LABELS_NAME, metadata=meta
                )
        if self.prompts is None or self.prompts.points not in viewer.layers:
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
    def _ready(self) -> bool:
        """A session exists and no job is changing it (clicks would wait for SAM 2)."""
        if self.state.busy:
            show_info("a job is running: wait for it or press Cancel, then click again")
            return False
        return self._require_session() is not None

    def on_click(self, frame: int, x: float, y: float, positive: bool) -> None:
        if not self._ready():
            return
        if self._dividing:
            self._daughter_clicks.append((frame, x, y))
            if len(self._daughter_clicks) == 2:
                self._finish_divide(frame)
            return
        self._guard(lambda: self.session.add_points(self.cell.value(), frame, [[x, y]],
                                                    [1 if positive else 0]), frame)  # fmt: skip

    def on_box(self, frame: int, box: tuple[float, float, float, float]) -> None:
        if self._ready():
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
        self.state.run_job(
            self.session.predict_frame,
            frame,
            on_return=lambda _masks: self._refresh(),
            on_finish=self._preview_done,
            busy=False,
        )

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
            painted = np.array(self.session.labels[t])
            self._snapshot()
            self._guard(lambda: self.session.seed_from_labels(t, painted), t)
            # paint edits on other frames count when a cell is deleted or divided: one pass
            # over the movie, in a worker
            self.state.run_job(self.session.sync_labels)

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

        self.track_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker = self.state.run_job(
            stream,
            on_yield=self.on_frame,
            on_error=lambda exc: show_error(f"tracking stopped: {exc}"),
            on_finish=self._tracking_done,
        )

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
        self.update_lineage()  # a job of its own: the dock stays busy until it is shown

    def _refresh(self) -> None:
        if self.labels_layer is not None:
            self.labels_layer.refresh()

    def update_lineage(self) -> None:
        self.lineage_view.update(self.session, self.labels_layer)
