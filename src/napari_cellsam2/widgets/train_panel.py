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
    QComboBox,
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
from .config_form import ConfigForm
from .layer_combo import LayerCombo
from .layer_lineage import layer_lineage_inputs
from .loss_plot import LossPlot
from .state import DockState
from .workers import yield_cpu_to_gui

LAYERS, FOLDER = "image + labels layers", "CTC folder"


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
        self.best: Path | None = None
        self.best_epoch: int | None = None
        self.form = ConfigForm()  # every scratch.* option, defaults from the typed config
        self.epochs = self.form.widgets["num_epochs"]
        self.frames = self.form.widgets["num_frames"]
        self.max_objects = self.form.widgets["max_num_objects"]
        self.steps = self.form.widgets["steps_per_epoch"]
        self.holdout = QSpinBox()
        self.holdout.setRange(0, 50)
        self.holdout.setValue(15)
        self.holdout.setSuffix(" % of frames")
        self.holdout.setToolTip("the movie's last frames validate each epoch (layers only)")
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
        self._follow_theme()
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(self.use_model)

        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.use_button):
            buttons.addWidget(b)
        form = QFormLayout(self)
        form.addRow(self.form)
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

    def _follow_theme(self, _event=None) -> None:
        """Colour the plot like the viewer (and again whenever its theme changes)."""
        from napari.utils.theme import get_theme

        theme = get_theme(self.state.viewer.theme)
        self.plot.set_theme(theme.background.as_hex(), theme.text.as_hex())
        if _event is None:
            self.state.viewer.events.theme.connect(self._follow_theme)

    # ---- configuration ---------------------------------------------------------------------
    def overrides(self) -> dict[str, object]:
        """The panel as values of the shared training config (dotted keys)."""
        run = Path(self.log_dir.text()) / time.strftime("run-%Y%m%d-%H%M%S")
        model = self.state.model
        items = {
            **self.form.values(),
            "launcher.experiment_log_dir": str(run),
            "model.base": model.spec,
            "model.device": str(model.device),
            "scratch.resolution": model.image_size,
        }
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
            overrides = self.overrides()
        except ValueError as exc:
            show_error(str(exc))
            return
        self.plot.clear()
        self.cancel_event.clear()
        self.checkpoint = None
        self.best: Path | None = None
        self.best_epoch: int | None = None
        self.bar.setValue(0)
        self.eta.setText("preparing data and model …")  # no stale text from an earlier run
        self._times: list[float] = []
        self._progress = progress(total=0, desc="fine-tuning")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self.state.run_job(
            run_training,
            overrides,
            layers,
            self.cancel_event,
            on_yield=self.on_event,
            on_error=self._failed,
            on_finish=self._finished,
        )

    def _failed(self, exc: BaseException) -> None:
        """A failure before or during training: said once, in the panel and as a notification."""
        self.eta.setText(f"training failed: {exc}")
        show_error(f"training failed: {exc}")

    def cancel(self) -> None:
        self.cancel_event.set()
        self.eta.setText("cancelling after this step (a checkpoint is kept) …")

    def on_event(self, event) -> None:
        if isinstance(event, StartEvent):
            self.bar.setRange(0, event.total_steps)
            self._progress.total = event.total_steps
            self.eta.setText(
                f"{event.mode}: {event.trainable:,} / {event.total_params:,} parameters trained"
                + "".join(f"; {note}" for note in event.notes)
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
            self.plot.add_scores(self.bar.value(), event.val_TRA, event.val_kept_iou)
        elif isinstance(event, CheckpointEvent):
            self.checkpoint = event.path
            if event.best is not None:
                self.best, self.best_epoch = event.best, event.epoch
            self.use_button.setEnabled(True)
        elif isinstance(event, DoneEvent):
            self.checkpoint = event.path or self.checkpoint
            word = "cancelled" if event.cancelled else "finished"
            best = f"; best: epoch {self.best_epoch}" if self.best is not None else ""
            self.eta.setText(f"training {word}; checkpoint: {self.checkpoint}{best}")
            show_info(f"fine-tuning {word}: {self.checkpoint}{best}")
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

    def chosen_checkpoint(self) -> tuple[Path | None, str]:
        """The checkpoint "Use this model" loads and how to name it: the best epoch by the
        validation tracking score when there was validation, else the latest checkpoint."""
        if self.best is not None:
            return self.best, f"the best epoch ({self.best_epoch}, by validation TRA)"
        return self.checkpoint, "the latest checkpoint"

    def use_model(self) -> None:
        """Swap the tracker to the fine-tuned model (loaded in the background)."""
        path, which = self.chosen_checkpoint()
        if path is not None:
            self.eta.setText(f"loading {which}: {path}")
            show_info(f"using {which}: {path}")
            self.state.request_model.emit(str(path))
