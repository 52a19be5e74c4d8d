"""A live loss plot for the fine-tune panel: train loss per step, validation loss per epoch, and
the validation tracking scores (TRA of the real session, IoU of the kept output) on a 0-1 axis.

Points are appended from the main thread as training events arrive; redraws are coalesced by a
timer so a fast training loop cannot flood the event loop with matplotlib renders. Colours follow
the napari theme (a white figure in a dark viewer is glaring), and the legend sits above the axes
so it never covers the newest steps.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

REDRAW_MS = 250


class LossPlot(QWidget):
    """Losses against the global step (left axis) and validation scores (right axis, 0-1)."""

    def __init__(
        self, parent: QWidget | None = None, background: str = "#262930", text: str = "#f0f1f2"
    ) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(4, 2.6), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(220, 190)  # the figure's inch size must not widen the dock
        self.axes = self.figure.add_subplot(1, 1, 1)
        self.scores_axes = self.axes.twinx()
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self._lines = {}
        for name, axes, style, color, label in (
            ("train", self.axes, "-", "tab:blue", "train loss"),
            ("validation", self.axes, "o-", "tab:orange", "val loss"),
            ("TRA", self.scores_axes, "s-", "tab:green", "val TRA"),
            ("kept_iou", self.scores_axes, "^--", "tab:purple", "val kept IoU"),
        ):
            self.series[name] = ([], [])
            (self._lines[name],) = axes.plot([], [], style, ms=4, lw=1, color=color, label=label)
        self.axes.set_xlabel("step")
        self.axes.set_ylabel("loss")
        self.scores_axes.set_ylabel("score")
        self.scores_axes.set_ylim(0, 1)
        self.figure.legend(
            handles=list(self._lines.values()),
            loc="outside upper center",
            ncols=2,
            fontsize="x-small",
            frameon=False,
        )
        self.set_theme(background, text)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def set_theme(self, background: str, text: str) -> None:
        """Figure and axes colours (napari theme ``background`` / ``text``)."""
        self.figure.set_facecolor(background)
        for axes in (self.axes, self.scores_axes):
            axes.set_facecolor(background)
            axes.tick_params(colors=text)
            axes.yaxis.label.set_color(text)
            axes.xaxis.label.set_color(text)
            for spine in axes.spines.values():
                spine.set_color(text)
        for legend in self.figure.legends:
            for label in legend.get_texts():
                label.set_color(text)
        self.canvas.draw_idle()

    @property
    def train_steps(self) -> list[int]:
        return self.series["train"][0]

    @property
    def train_losses(self) -> list[float]:
        return self.series["train"][1]

    @property
    def val_steps(self) -> list[int]:
        return self.series["validation"][0]

    @property
    def val_losses(self) -> list[float]:
        return self.series["validation"][1]

    def clear(self) -> None:
        for steps, values in self.series.values():
            steps.clear()
            values.clear()
        self.redraw()

    def _add(self, name: str, step: int, value: float | None) -> None:
        if value is None:
            return
        steps, values = self.series[name]
        steps.append(step)
        values.append(value)
        self._schedule()

    def add_train(self, step: int, loss: float) -> None:
        self._add("train", step, loss)

    def add_validation(self, step: int, loss: float) -> None:
        self._add("validation", step, loss)

    def add_scores(self, step: int, tra: float | None, kept_iou: float | None) -> None:
        """The validation tracking scores of an epoch (None where not measured)."""
        self._add("TRA", step, tra)
        self._add("kept_iou", step, kept_iou)

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        for name, (steps, values) in self.series.items():
            self._lines[name].set_data(steps, values)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw_idle()
