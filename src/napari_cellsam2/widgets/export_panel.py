"""Export a labels layer (with its lineage) as CTC RES or GT/TRA, and evaluate it against GT.

Hand edits made with napari's paint tools are respected: the layer is made CTC-valid
(:func:`napari_cellsam2.ctc.repair.make_consistent`) before writing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from napari.layers import Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from .layer_combo import LayerCombo
from .layer_lineage import layer_lineage_inputs
from .state import DockState
from .workers import until_cancelled


def _path_row(edit: QLineEdit, title: str, parent: QWidget) -> QHBoxLayout:
    browse = QPushButton("…")
    browse.setMaximumWidth(30)

    def pick() -> None:
        folder = QFileDialog.getExistingDirectory(parent, title)
        if folder:
            edit.setText(folder)

    browse.clicked.connect(pick)
    row = QHBoxLayout()
    row.addWidget(edit)
    row.addWidget(browse)
    return row


class ExportPanel(QWidget):
    """Write RES / GT from a labels layer; evaluate against a ``NN_GT`` folder."""

    def __init__(self, state: DockState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.layer = LayerCombo(state.viewer, Labels)
        self.out = QLineEdit()
        self.out.setPlaceholderText("…/01_RES")
        self.gt = QLineEdit()
        self.gt.setPlaceholderText("…/01_GT")
        self.write_res = QPushButton("Write RES")
        self.write_gt = QPushButton("Write GT/TRA")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self._cancel = threading.Event()
        self.evaluate_button = QPushButton("Evaluate")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["metric", "score"])
        self.table.verticalHeader().setVisible(False)
        self.write_res.clicked.connect(lambda: self.export("res"))
        self.write_gt.clicked.connect(lambda: self.export("gt"))
        self.evaluate_button.clicked.connect(self.evaluate)
        buttons = QHBoxLayout()
        buttons.addWidget(self.write_res)
        buttons.addWidget(self.write_gt)
        buttons.addWidget(self.cancel_button)
        form = QFormLayout(self)
        form.addRow("Labels", self.layer)
        form.addRow("Output", _path_row(self.out, "Output folder", self))
        form.addRow(buttons)
        form.addRow("GT folder", _path_row(self.gt, "Ground-truth folder (NN_GT)", self))
        form.addRow(self.evaluate_button)
        form.addRow(self.table)

    def export(self, fmt: str) -> None:
        """Write the chosen layer in a worker, a frame at a time (progress bar, Cancel)."""
        from ..ctc.repair import iter_export_labels

        layer, out = self.layer.layer(), self.out.text().strip()
        if layer is None or not out:
            show_error("choose a labels layer and an output folder first")
            return
        labels, parents, first = layer_lineage_inputs(self.state.viewer, layer)
        folder = Path(out)
        if fmt == "gt" and not folder.name.endswith("_GT"):  # 01, 01_RES -> 01_GT
            folder = folder.parent / f"{folder.name.removesuffix('_RES')}_GT"
        cancel = self._cancel = threading.Event()
        bar = progress(total=len(labels), desc=f"writing {folder.name}")

        def stream():  # cancelled: the temporary folder is removed, nothing is written
            return (yield from until_cancelled(
                iter_export_labels(folder, labels, parents, first, fmt), cancel
            ))  # fmt: skip

        def done(result) -> None:
            if result is None:
                show_info(f"export cancelled: {folder} was not written")
                return
            _, lineage = result
            show_info(f"wrote {folder}: {len(lineage)} tracks, {len(lineage.divisions)} divisions")

        self._run(stream, bar, done)

    def _run(self, stream, bar, on_return) -> None:
        """A cancellable job that reports ``(done, total)`` frames on ``bar``."""

        def step(done_total: tuple[int, int]) -> None:
            bar.total = done_total[1]
            bar.update(done_total[0] - bar.n)

        starters = (self.write_res, self.write_gt, self.evaluate_button)

        def finished() -> None:
            bar.close()
            self.cancel_button.setEnabled(False)
            for button in starters:
                button.setEnabled(True)

        self.cancel_button.setEnabled(True)
        for button in starters:  # one job at a time: Cancel stops the one that runs
            button.setEnabled(False)
        self.state.run_job(stream, on_yield=step, on_return=on_return, on_finish=finished)

    def cancel(self) -> None:
        self._cancel.set()

    def evaluate(self) -> None:
        """Score the chosen layer against a GT folder in a worker (progress while the result
        is written, Cancel until scoring starts)."""
        from ..ctc.repair import make_consistent
        from ..evaluation.scoring import iter_evaluate_arrays

        layer, gt = self.layer.layer(), self.gt.text().strip()
        if layer is None or not gt:
            show_error("choose a labels layer and a ground-truth folder first")
            return
        labels, parents, first = layer_lineage_inputs(self.state.viewer, layer)
        cancel = self._cancel = threading.Event()
        bar = progress(total=len(labels), desc="evaluating")

        def score():
            fixed, lineage = make_consistent(np.asarray(labels), parents, first)
            # one process: forking a Qt application with running threads can deadlock
            steps = iter_evaluate_arrays(Path(gt), fixed, lineage, first_frame=first, workers=1)
            return (yield from until_cancelled(steps, cancel))

        def done(scores) -> None:
            if scores is None:
                show_info("evaluation cancelled")
            else:
                self.show_scores(scores)

        self._run(score, bar, done)

    def show_scores(self, scores: dict) -> None:
        rows = [(k, v) for k, v in scores.items() if isinstance(v, float | int) or v is None]
        self.table.setRowCount(len(rows))
        for i, (name, value) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(name))
            self.table.setItem(i, 1, QTableWidgetItem("-" if value is None else f"{value:.4f}"))
        self.scores = scores
