"""Prompt-and-track panel: clicks/boxes per cell, instant previews, tracking that streams into a
labels layer with progress and Cancel, corrections, divisions, deletion, undo, lineage tracks.

Key bindings on the clicks and tracking layers: ``n`` new cell, ``x`` flips click polarity
(negative clicks mark "not this cell").

The Qt main thread never calls into the session: every change runs as an ordered job (see
``track_jobs``), so a click never waits for SAM 2 running in a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.layers import Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from .cell_edits import CellEdits
from .lineage_view import LineageView
from .prompt_input import PromptInput
from .prompt_layers import PromptLayers
from .session_restart import LABELS_NAME, SessionStart
from .state import DockState
from .track_form import build_track_form, division_mode
from .track_jobs import TrackingStarted, edit_and_preview, tracking_steps

if TYPE_CHECKING:  # the tracker imports torch; the model's loading job imports it
    from ..tracking import TrackingSession

__all__ = ["LABELS_NAME", "TrackPanel"]


class TrackPanel(SessionStart, PromptInput, CellEdits, QWidget):
    """Everything between "click a cell" and "a tracked labels layer with lineage"."""

    def __init__(self, state: DockState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.session: TrackingSession | None = None
        self.prompts: PromptLayers | None = None
        self.labels_layer: Labels | None = None
        self.worker = None
        self._progress: progress | None = None  # napari's bar, beside the panel's own
        self._undo = None  # a snapshot from before the last tracking action, or a Restart
        self._dividing = False
        self.lineage_view = LineageView(state)
        self.pending_previews = 0  # previews queued or running (tests and scripts wait on it)
        self._daughter_clicks: list[tuple[int, float, float]] = []
        actions = [
            ("Start session", self.start_session), ("New cell (n)", self.new_cell),
            ("Seed from labels", self.seed), ("Use painted frame", self.use_painted),
            ("Detect cells", self.detect_cells), ("Divide cell", self.begin_divide),
            ("Delete cell", self.delete_cell), ("Undo", self.undo),
        ]  # fmt: skip
        build_track_form(self, state.viewer, actions)
        self.cell.valueChanged.connect(self.cell_chosen)
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
        only runs SAM 2's prompt encoder and mask decoder. The frame slider spans all layers:
        a longer image opened beside the session can put it past the session's last frame."""
        session, frame = self.session, self.current_frame()
        if session is not None and not self.state.busy and 0 <= frame < session.num_frames:
            self.state.run_job(  # errors surface with the next preview or click
                session.prefetch, frame, on_error=lambda _exc: None, busy=False
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

    def _failed(self, message: str) -> None:
        """Say what went wrong once: in the panel and as one notification."""
        self.status.setText(message)
        show_error(message)

    # ---- session ----------------------------------------------------------------------------
    def current_frame(self) -> int:
        return int(self.state.viewer.dims.current_step[0])

    def _require_session(self) -> TrackingSession | None:
        if self.session is None:
            self._failed("start a session first")
        return self.session

    def seed(self) -> None:
        """Every label of the seed layer's current frame becomes a mask prompt; the frame is
        read (a lazy layer reads its file) and the masks resized in the worker."""
        layer, session = self.seed_layer.layer(), self._require_session()
        if session is not None and layer is None:
            self._failed("choose a seed labels layer first")
        elif session is not None:
            t = self.current_frame()
            self._edit(lambda: session.seed_from_labels(t, layer.data[t]), t)

    def detect_cells(self) -> None:
        """Every cell SAM 2 finds on the current frame without clicks (a grid of clicks,
        filtered and deduplicated: ``tracking.detect``) becomes a new cell prompted by its
        mask, except cells already tracked there; one undoable edit, run in the worker. The
        options are the panel's "Detection options" (``DetectConfig``)."""
        if self._require_session():
            session, t = self.session, self.current_frame()
            try:
                config = self.detect_options.config()
            except ValueError as error:  # a value DetectConfig refuses: say which, do nothing
                self._failed(str(error))
                return

            def found(ids: list[int]) -> None:
                message = (
                    f"found {len(ids)} new cell(s) on frame {t}"
                    if ids
                    else (f"no new cell found on frame {t}")
                )
                self.status.setText(message)
                show_info(message)

            self._edit(lambda: session.add_detections(t, session.detect(t, config)), t, done=found)

    def use_painted(self) -> None:
        """Hand-painted corrections on the current frame become mask prompts for re-tracking;
        paint edits on other frames count when a cell is deleted or divided (sync_labels)."""
        if self._require_session():
            session, t = self.session, self.current_frame()

            def painted() -> None:
                session.seed_from_labels(t, session.labels[t].copy())
                session.sync_labels()

            self._edit(painted, t)

    def _edit(
        self,
        edit: Callable[[], Any],
        frame: int | None,
        done: Callable[[Any], Any] | None = None,
        refused: Callable[[], Any] | None = None,
    ) -> None:
        """Run an undoable edit and the preview of ``frame`` in the ordered worker (a busy job:
        it may read and write every frame of a cell); ``refused`` runs when it fails."""

        def edited(out) -> None:
            self._undo = out.undo
            self._refresh()
            self.update_lineage()  # a division or deletion changes the links export writes
            if done is not None:
                done(out.result)

        def failed(exc: Exception) -> None:
            if refused is not None:
                refused()
            self._failed(str(exc))

        self.state.run_job(
            edit_and_preview, self.session, edit, frame, on_return=edited, on_error=failed,
            ordered=True,
        )  # fmt: skip

    # ---- tracking ----------------------------------------------------------------------------
    def track(self) -> None:
        if not self._require_session():
            return
        start = self.start_frame.value() if self.start_frame.value() >= 0 else None
        end = self.end_frame.value() if self.end_frame.value() >= 0 else None
        from ..tracking.new_cells import check_new_cell_options  # torch is loaded by now

        every, direction = self.new_cells.value(), self.direction.currentText()
        if every and (start is not None or end is not None):
            self._failed(
                "new cells are looked for over the whole movie: set From / To frame to auto, or "
                "New cells to off"
            )
            return
        try:
            check_new_cell_options(every, direction)  # e.g. backward: new cells go forward
            # checked here, applied by the job: the session changes only in its ordered worker
            mode = self.session.resolve_divisions(division_mode(self.divisions.currentText()))
            divisions = (mode, self.division_options.config())
            detect = self.detect_options.config() if every else None
        except ValueError as exc:  # learned without a division head, or a refused threshold
            self._failed(str(exc))
            return
        self.bar.reset()  # nothing of the previous run stays on show
        self.status.setText("tracking …")
        self.track_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker = self.state.run_job(
            tracking_steps, self.session, direction, start, end, every, detect, divisions,
            on_yield=self.on_frame, on_return=self._nothing_tracked,
            on_error=self._tracking_failed, on_finish=self._tracking_done, ordered=True,
        )  # fmt: skip

    def on_frame(self, item) -> None:
        if isinstance(item, TrackingStarted):
            self._undo = item.undo
            self.bar.setRange(0, item.total)
            self.bar.setValue(0)
            self._progress = progress(total=item.total, desc="tracking")
            return
        # with new cells the total is an estimate (track_jobs.tracking_steps): never past it
        self.bar.setValue(min(self.bar.value() + 1, self.bar.maximum()))
        if self._progress is not None and self._progress.n < (self._progress.total or 0):
            self._progress.update(1)  # frames computed before a Cancel may arrive after it
        self._refresh()
        self.status.setText(f"tracked frame {item.frame} ({len(item.object_ids)} cells)")

    def _tracking_failed(self, exc: Exception) -> None:
        self.bar.reset()
        self._failed(f"tracking stopped: {exc}")

    def _nothing_tracked(self, message: str | None) -> None:
        if message:
            self.status.setText(message)
            show_info(message)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _tracking_done(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.worker = None
        self.track_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._refresh()
        self.update_lineage()  # a job of its own: the dock stays busy until it is shown

    def _refresh(self) -> None:
        if self.labels_layer is not None:
            self.labels_layer.refresh()
        self.new_cell_hint()

    def update_lineage(self) -> None:
        if self.session is not None:
            self.lineage_view.update(self.session, self.labels_layer)
