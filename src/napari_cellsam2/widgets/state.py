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
        self.busy = False

    def set_model(self, model: Any) -> None:
        self.model = model
        self.model_changed.emit(model)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busy_changed.emit(busy)
