"""Model picker: hub ids, a local Meta ``.pt``, fine-tuned checkpoints/adapters; loads in the
background and reports missing weights as a notification that says how to get them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from .state import DockState

HUB_MODELS = [
    "facebook/sam2.1-hiera-tiny",
    "facebook/sam2.1-hiera-small",
    "facebook/sam2.1-hiera-base-plus",
    "facebook/sam2.1-hiera-large",
]
DEMO_MODEL = "demo"  # model.loading.DEMO_SPEC (not imported: it would import torch)
DEMO_LABEL = "demo — small SAM 2 trained on synthetic data only"
DEVICES = ["auto", "cuda", "mps", "cpu"]
RANDOM_STYLE = "color: #ff5555; font-weight: bold"


def load_for_tracking(spec: str, device: str):
    """Worker body: load the model, and import the tracker here too, so that neither the
    first load nor Start session imports torch and transformers (seconds) on the Qt main
    thread."""
    from .. import tracking  # noqa: F401
    from ..model.loading import load_model

    return load_model(spec, device)


def find_checkpoints(folder: Path) -> list[Path]:
    """Fine-tuned checkpoints and adapters (folders with ``cellsam2.json``) under ``folder``."""
    return sorted(p.parent for p in Path(folder).rglob("cellsam2.json"))


def checkpoint_label(folder: Path) -> str:
    try:
        kind = json.loads((folder / "cellsam2.json").read_text()).get("kind", "?")
    except (OSError, ValueError):
        kind = "?"
    return f"{folder.parent.name}/{folder.name} ({kind})"


class ModelPanel(QWidget):
    """Choose and load a SAM 2 model; emits ``state.model_changed`` when loaded."""

    def __init__(self, state: DockState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._generation = 0  # load requests so far
        self.spec = QComboBox()
        self.spec.setEditable(True)
        for hub_id in HUB_MODELS:
            self.spec.addItem(hub_id, hub_id)
        self.spec.addItem(DEMO_LABEL, DEMO_MODEL)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.browse_pt = QPushButton("Meta .pt…")
        self.browse_pt.clicked.connect(self._browse_pt)
        self.scan = QPushButton("Experiments…")
        self.scan.clicked.connect(self._browse_experiments)
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load)
        self.status = QLabel("no model loaded")
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.browse_pt)
        buttons.addWidget(self.scan)
        form = QFormLayout(self)
        form.addRow("Model", self.spec)
        form.addRow("", buttons)
        form.addRow("Device", self.device)
        form.addRow(self.load_button)
        form.addRow(self.status)
        state.model_changed.connect(self._show_model)
        state.request_model.connect(self._load_requested)

    # ---- choosing ------------------------------------------------------------------------------
    def current_spec(self) -> str:
        """The spec of the selected entry (its data), or the typed text for a custom entry."""
        index = self.spec.currentIndex()
        if index >= 0 and self.spec.itemText(index) == self.spec.currentText():
            return str(self.spec.itemData(index))
        return self.spec.currentText().strip()

    def add_spec(self, spec: str, label: str | None = None) -> None:
        """Add (once) and select a model entry."""
        index = self.spec.findData(spec)
        if index < 0:
            self.spec.addItem(label or spec, spec)
            index = self.spec.count() - 1
        self.spec.setCurrentIndex(index)

    def _browse_pt(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SAM 2 checkpoint", "", "Checkpoints (*.pt)")
        if path:
            self.add_spec(path)

    def _browse_experiments(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Experiment folder")
        if folder:
            self.add_experiments(Path(folder))

    def add_experiments(self, folder: Path) -> Any:
        """List the fine-tuned checkpoints under ``folder`` in the picker. The folder is
        searched in a worker: a large tree (or a network drive) takes seconds, which the GUI
        thread must not spend. Returns the worker."""

        def scan() -> list[tuple[str, str]]:
            return [(str(c), checkpoint_label(c)) for c in find_checkpoints(folder)]

        def found(entries: list[tuple[str, str]]) -> None:
            for spec, label in entries:
                self.add_spec(spec, label)
            if not entries:
                show_info(f"no fine-tuned checkpoints (cellsam2.json) under {folder}")

        return self.state.run_job(scan, on_return=found, busy=False)

    # ---- loading -------------------------------------------------------------------------------
    def load(self, spec: str | None = None) -> None:
        """Load in a worker thread; errors (e.g. missing weights) show once, here and as one
        notification."""
        spec = spec or self.current_spec()
        device = self.device.currentText()
        self.status.setText(f"loading {spec} …")
        self.status.setStyleSheet("")
        self.load_button.setEnabled(False)
        self._generation += 1
        generation = self._generation  # only the newest request may replace the model
        bar = progress(total=0, desc=f"loading {Path(spec).name or spec}")  # a busy indicator

        def finished() -> None:
            bar.close()
            self.load_button.setEnabled(True)

        self.state.run_job(
            load_for_tracking,
            spec,
            device,
            on_return=lambda model: generation == self._generation and self.state.set_model(model),
            on_error=lambda exc: self._failed(spec, exc),
            on_finish=finished,
        )

    def _load_requested(self, spec: str) -> None:
        folder = Path(spec)
        self.add_spec(spec, checkpoint_label(folder) if folder.is_dir() else None)
        self.load(spec)

    def _failed(self, spec: str, exc: Exception) -> None:
        kept = self.state.model
        still = f" (still using {kept.spec})" if kept is not None else ""
        self.status.setText(f"could not load {spec}{still}: {exc}")
        show_error(str(exc))

    def _show_model(self, model) -> None:
        """Say which model tracks, and make random weights (which do not segment cells, also
        after fine-tuning) impossible to miss."""
        self.status.setText(f"loaded {model.description}")
        self.status.setStyleSheet(RANDOM_STYLE if model.is_random else "")
