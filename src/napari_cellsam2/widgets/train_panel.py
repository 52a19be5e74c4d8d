"""One-click fine-tuning from the dock: the shared training config, a background worker, a live
loss plot, progress with ETA, Cancel (keeps a clean checkpoint) and "Use this model"."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from napari.layers import Image, Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..training.events import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    StartEvent,
    StepEvent,
    ValidationEvent,
)
from .layer_combo import LayerCombo
from .layer_lineage import layer_lineage_inputs
from .loss_plot import LossPlot
from .state import DockState
from .workers import yield_cpu_to_gui

LAYERS, FOLDER = "image + labels layers", "CTC folder"


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    return box


def _lr(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(7)
    box.setRange(0.0, 1.0)
    box.setSingleStep(value / 2)
    box.setValue(value)
    return box


def run_training(values: dict[str, object], layers: tuple | None, cancel: threading.Event):
    """Worker body: config, data and model are built here, off the Qt main thread; then every
    training event is yielded (the loop checks ``cancel`` between steps)."""
    from ..training.config import load_config
    from ..training.data import movie_datasets
    from ..training.loop import train

    yield_cpu_to_gui()
    cfg = load_config(values=values)
    datasets = movie_datasets(*layers[:3], cfg.scratch, layers[3]) if layers else (None, None)
    yield from train(cfg, cancel=cancel, dataset=datasets[0], val_dataset=datasets[1])


class TrainPanel(QWidget):
    """Fine-tune the loaded model on the current layers or a CTC folder."""

    def __init__(self, state: DockState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.cancel_event = threading.Event()
        self.checkpoint: Path | None = None
        self.mode = QComboBox()
        self.mode.addItems(["LoRA", "full"])
        self.epochs = _spin(1, 1000, 5)
        self.frames = _spin(1, 64, 4)
        self.max_objects = _spin(1, 500, 30)
        self.steps = _spin(0, 1_000_000, 0)
        self.steps.setSpecialValueText("all clips")
        self.lora_lr, self.base_lr, self.vision_lr = _lr(1e-3), _lr(5e-6), _lr(3e-6)
        self.holdout = _spin(0, 50, 15)
        self.holdout.setSuffix(" % of frames")
        self.holdout.setToolTip("the movie's last frames validate each epoch (layers only)")
        self.augment = QCheckBox("augment")
        self.augment.setChecked(True)
        self.source = QComboBox()
        self.source.addItems([LAYERS, FOLDER])
        self.image = LayerCombo(state.viewer, Image)
        self.labels = LayerCombo(state.viewer, Labels)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("dataset root with train/ (and val/)")
        self.log_dir = QLineEdit(str(Path.home() / "cellsam2-runs"))
        self.start_button = QPushButton("Start fine-tuning")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.use_button = QPushButton("Use this model")
        self.use_button.setEnabled(False)
        self.bar = QProgressBar()
        self.eta = QLabel("")
        self.eta.setWordWrap(True)  # long checkpoint paths must not widen the dock
        self.plot = LossPlot()
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(self.use_model)

        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.use_button):
            buttons.addWidget(b)
        form = QFormLayout(self)
        form.addRow("Mode", self.mode)
        form.addRow("Epochs", self.epochs)
        form.addRow("Frames per clip", self.frames)
        form.addRow("Max objects", self.max_objects)
        form.addRow("Steps per epoch", self.steps)
        form.addRow("LoRA lr", self.lora_lr)
        form.addRow("Base lr", self.base_lr)
        form.addRow("Vision lr", self.vision_lr)
        form.addRow("", self.augment)
        form.addRow("Training data", self.source)
        form.addRow("Image", self.image)
        form.addRow("Labels", self.labels)
        form.addRow("Validation", self.holdout)
        form.addRow("Folder", self.folder)
        form.addRow("Run folder", self.log_dir)
        form.addRow(buttons)
        form.addRow(self.bar)
        form.addRow(self.eta)
        form.addRow(self.plot)

    # ---- configuration ---------------------------------------------------------------------
    def overrides(self) -> dict[str, object]:
        """The panel as values of the shared training config (dotted keys)."""
        run = Path(self.log_dir.text()) / time.strftime("run-%Y%m%d-%H%M%S")
        model = self.state.model
        items = {
            "launcher.experiment_log_dir": str(run),
            "model.base": model.spec,
            "model.device": str(model.device),
            "scratch.resolution": model.image_size,
            "scratch.use_lora": self.mode.currentText() == "LoRA",
            "scratch.num_epochs": self.epochs.value(),
            "scratch.num_frames": self.frames.value(),
            "scratch.max_num_objects": self.max_objects.value(),
            "scratch.lora_lr": self.lora_lr.value(),
            "scratch.base_lr": self.base_lr.value(),
            "scratch.vision_lr": self.vision_lr.value(),
            "scratch.augment": self.augment.isChecked(),
        }
        if self.steps.value():
            items["scratch.steps_per_epoch"] = self.steps.value()
        if self.source.currentText() == FOLDER:
            items["dataset.data_dir"] = self.folder.text().strip()
        return items

    def _layers(self) -> tuple | None:
        """(images, labels, parents, hold-out fraction) of the chosen layers; None when
        training on a folder."""
        if self.source.currentText() == FOLDER:
            return None
        image, labels = self.image.layer(), self.labels.layer()
        if image is None or labels is None:
            raise ValueError("choose the image and labels layers to train on")
        data, parents, _ = layer_lineage_inputs(self.state.viewer, labels)
        return image.data, data, parents, self.holdout.value() / 100

    # ---- running ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.state.model is None:
            show_error("load a model first (Model panel): fine-tuning starts from it")
            return
        try:
            layers = self._layers()
        except ValueError as exc:
            show_error(str(exc))
            return
        self.plot.clear()
        self.cancel_event.clear()
        self.checkpoint = None
        self._times: list[float] = []
        self._progress = progress(total=0, desc="fine-tuning")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self.state.run_job(
            run_training,
            self.overrides(),
            layers,
            self.cancel_event,
            on_yield=self.on_event,
            on_error=lambda exc: show_error(f"training failed: {exc}"),
            on_finish=self._finished,
        )

    def cancel(self) -> None:
        self.cancel_event.set()
        self.eta.setText("cancelling after this step (a checkpoint is kept) …")

    def on_event(self, event) -> None:
        if isinstance(event, StartEvent):
            self.bar.setRange(0, event.total_steps)
            self._progress.total = event.total_steps
            self.eta.setText(
                f"{event.mode}: {event.trainable:,} / {event.total_params:,} parameters trained"
            )
        elif isinstance(event, StepEvent):
            self.plot.add_train(event.global_step, event.loss)
            self.bar.setValue(event.global_step)
            self._progress.update(1)
            self._times.append(event.seconds)
            left = (event.total_steps - event.global_step) * sum(self._times) / len(self._times)
            self.eta.setText(
                f"epoch {event.epoch} step {event.global_step}/{event.total_steps}  "
                f"loss {event.loss:.4f}  ETA {left:.0f} s"
            )
        elif isinstance(event, ValidationEvent):
            self.plot.add_validation(self.bar.value(), event.val_loss)
        elif isinstance(event, CheckpointEvent):
            self.checkpoint = event.path
            self.use_button.setEnabled(True)
        elif isinstance(event, DoneEvent):
            self.checkpoint = event.path or self.checkpoint
            word = "cancelled" if event.cancelled else "finished"
            self.eta.setText(f"training {word}; checkpoint: {self.checkpoint}")
            show_info(f"fine-tuning {word}: {self.checkpoint}")
        elif isinstance(event, ErrorEvent):
            self.checkpoint = event.checkpoint or self.checkpoint
            self.eta.setText(event.message)
            show_error(event.message)
        self.use_button.setEnabled(self.checkpoint is not None)

    def _finished(self) -> None:
        self._progress.close()
        self.plot.redraw()
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def use_model(self) -> None:
        """Swap the tracker to the fine-tuned checkpoint/adapter (loaded in the background)."""
        if self.checkpoint is not None:
            self.state.request_model.emit(str(self.checkpoint))
