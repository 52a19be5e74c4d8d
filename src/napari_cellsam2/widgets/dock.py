"""The CellSAM2 dock: model, track, fine-tune and export panels sharing one state."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

from .export_panel import ExportPanel
from .model_panel import ModelPanel
from .state import DockState
from .track_panel import TrackPanel
from .train_panel import TrainPanel


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(widget)
    return area


class CellSAM2Widget(QWidget):
    """napari dock widget (``napari_viewer`` is injected by napari, possibly as a proxy)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = DockState(napari_viewer)
        self.model_panel = ModelPanel(self.state)
        self.track_panel = TrackPanel(self.state)
        self.train_panel = TrainPanel(self.state)
        self.export_panel = ExportPanel(self.state)
        self.tabs = QTabWidget()
        self.tabs.addTab(_scrolled(self.model_panel), "Model")
        self.tabs.addTab(_scrolled(self.track_panel), "Track")
        self.tabs.addTab(_scrolled(self.train_panel), "Fine-tune")
        self.tabs.addTab(_scrolled(self.export_panel), "Export")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(360)
