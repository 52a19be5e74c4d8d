"""Divisions, deletion and undo for the track panel (a mixin: it uses the panel's session,
state, cell selector, prompt layers and preview)."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error, show_info

from ..tracking import PointPrompt


class CellEdits:
    """Edits that change a cell across frames; each runs in a worker, since ending, removing or
    restoring a cell touches every frame it lives on."""

    def begin_divide(self) -> None:
        if self._require_session():
            self._dividing, self._daughter_clicks = True, []
            self.prompts.select_points()
            self.status.setText(f"click the two daughters of cell {self.cell.value()}")

    def _finish_divide(self, frame: int) -> None:
        clicks, self._dividing, self._daughter_clicks = self._daughter_clicks, False, []
        if clicks[0][0] != clicks[1][0]:
            show_error("click both daughters on the same frame (where they first appear)")
            return
        prompts = [PointPrompt(np.array([c[1:]]), np.array([1])) for c in clicks]
        self._snapshot()
        mother = self.cell.value()

        def divided(daughters) -> None:
            self.status.setText(f"cell {mother} divides into {daughters} on frame {frame}")
            self.preview(frame)

        # ending the mother clears her later frames: a pass over the movie, in a worker
        self.state.run_job(self.session.divide, mother, frame, prompts, on_return=divided)

    def delete_cell(self) -> None:
        if self._require_session():
            self._snapshot()
            frame = self.current_frame()  # every frame of the cell is cleared: in a worker
            done = lambda _: self.preview(frame)  # noqa: E731
            self.state.run_job(self.session.remove_object, self.cell.value(), on_return=done)

    def _snapshot(self) -> None:
        self._undo = self.session.snapshot()

    def undo(self) -> None:
        """Return the session (labels, cells, prompts, divisions, SAM 2 memory) to before the
        last tracking action."""
        if self.session is None or self._undo is None:
            show_info("nothing to undo")
            return
        snapshot, self._undo = self._undo, None

        def restored(_result) -> None:
            self._refresh()
            self.update_lineage()

        # writes back every frame the undone actions changed: in a worker
        self.state.run_job(self.session.restore, snapshot, on_return=restored)
