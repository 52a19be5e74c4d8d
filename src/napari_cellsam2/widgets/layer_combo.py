"""A combo box listing the viewer's layers of one type, kept in sync with the layer list."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox


class LayerCombo(QComboBox):
    """Names of the viewer's layers of ``layer_type``; ``layer()`` returns the selected one."""

    def __init__(self, viewer: Any, layer_type: type) -> None:
        super().__init__()
        self.viewer = viewer
        self.layer_type = layer_type
        layers = viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        current = self.currentText()
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, self.layer_type)]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)

    def layer(self) -> Any:
        name = self.currentText()
        return next((ly for ly in self.viewer.layers if ly.name == name), None)

    def select(self, name: str) -> None:
        self.refresh()
        self.setCurrentText(name)
