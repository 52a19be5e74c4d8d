"""A live loss plot (train loss per step, validation loss per epoch) for the fine-tune panel.

Points are appended from the main thread as training events arrive; redraws are coalesced by a
timer so a fast training loop cannot flood the event loop with matplotlib renders.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

REDRAW_MS = 250


class LossPlot(QWidget):
    """Train loss against global step and validation loss at the end of each epoch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(220, 180)  # the figure's inch size must not widen the dock
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.train_steps: list[int] = []
        self.train_losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        (self._train_line,) = self.axes.plot([], [], lw=1, color="tab:blue", label="train")
        (self._val_line,) = self.axes.plot(
            [], [], "o-", ms=4, color="tab:orange", label="validation"
        )
        self.axes.set_xlabel("step")
        self.axes.set_ylabel("loss")
        self.axes.legend(loc="upper right", fontsize="small")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def clear(self) -> None:
        for values in (self.train_steps, self.train_losses, self.val_steps, self.val_losses):
            values.clear()
        self.redraw()

    def add_train(self, step: int, loss: float) -> None:
        self.train_steps.append(step)
        self.train_losses.append(loss)
        self._schedule()

    def add_validation(self, step: int, loss: float) -> None:
        self.val_steps.append(step)
        self.val_losses.append(loss)
        self._schedule()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        self._train_line.set_data(self.train_steps, self.train_losses)
        self._val_line.set_data(self.val_steps, self.val_losses)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw_idle()
