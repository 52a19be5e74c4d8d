"""Divisions, deletion and undo for the track panel (a mixin: it uses the panel's session,
state, cell selector, prompt layers, status and ordered edit jobs)."""

from __future__ import annotations

from napari.utils.notifications import show_info

from .session_restart import Restart


class CellEdits:
    """Edits that change a cell across frames; each runs in the ordered worker, since ending,
    removing or restoring a cell touches every frame it lives on."""

    def begin_divide(self) -> None:
        if self._require_session():
            self._dividing, self._daughter_clicks = True, []
            self.prompts.select_points()
            self.status.setText(f"click the two daughters of cell {self.cell.value()}")

    def cancel_divide(self, clicks: list | None = None) -> None:
        """Leave divide mode (a new session, an undo, a refused or failed division) and take
        its daughter clicks (the pending ones, or ``clicks``) off the clicks layer."""
        clicks = self._daughter_clicks if clicks is None else clicks
        self._dividing, self._daughter_clicks = False, []
        if self.prompts is not None:
            for click in clicks:
                self.prompts.forget_click(*click)

    def _finish_divide(self, frame: int) -> None:
        from ..tracking import PointPrompt  # imported by the model's loading job

        clicks = self._daughter_clicks
        if clicks[0][0] != clicks[1][0]:
            self.cancel_divide()
            self._failed("click both daughters on the same frame (where they first appear)")
            return
        self._dividing, self._daughter_clicks = False, []  # the clicks are the division's now
        prompts = [PointPrompt([c[1:]], [1]) for c in clicks]
        session, mother = self.session, self.cell.value()

        def divided(daughters) -> None:
            self.status.setText(f"cell {mother} divides into {daughters} on frame {frame}")

        # ending the mother clears her later frames: a pass over the movie
        self._edit(
            lambda: session.divide(mother, frame, prompts), frame, done=divided,
            refused=lambda: self.cancel_divide(clicks),
        )  # fmt: skip

    def delete_cell(self) -> None:
        if self._require_session():
            session, cell = self.session, self.cell.value()
            self._edit(lambda: session.remove_object(cell), self.current_frame())

    def undo(self) -> None:
        """Return the session (labels, cells, prompts, divisions, SAM 2 memory) to before the
        last tracking action, or to the previous session after Start session."""
        undo, self._undo = self._undo, None
        self.cancel_divide()
        if isinstance(undo, Restart):
            self.session, self._undo, self.labels_layer = undo.session, undo.undo, undo.layer
            undo.revert(self.state.viewer)
            self.status.setText("back to the labels (and session) before Start session")
            self.update_lineage()
            return
        if self.session is None or undo is None:
            show_info("nothing to undo")
            return

        def restored(_result) -> None:
            self._refresh()
            self.update_lineage()

        # writes back every frame the undone actions changed
        self.state.run_job(
            self.session.restore, undo, on_return=restored,
            on_error=lambda exc: self._failed(f"could not undo: {exc}"), ordered=True,
        )  # fmt: skip
