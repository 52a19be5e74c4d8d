"""What the dock's panels share: the viewer, the loaded model and the tracking session.

Panels talk through this object's signals instead of holding references to each other, so each
panel stays small and testable on its own.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, Signal


class DockState(QObject):
    """Shared state of one CellSAM2 dock."""

    model_changed = Signal(object)  # LoadedModel
    busy_changed = Signal(bool)  # a long job (load, track, train) started or ended
    request_model = Signal(str)  # a panel asks the model panel to load this spec

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.model: Any = None  # napari_cellsam2.model.loading.LoadedModel
        self._jobs = 0

    @property
    def busy(self) -> bool:
        """True while any background job of the dock runs."""
        return self._jobs > 0

    def set_model(self, model: Any) -> None:
        self.model = model
        self.model_changed.emit(model)

    def set_busy(self, busy: bool) -> None:
        """A job starts (True) or ends (False); overlapping jobs are counted."""
        was = self.busy
        self._jobs = max(0, self._jobs + (1 if busy else -1))
        if self.busy != was:
            self.busy_changed.emit(self.busy)
