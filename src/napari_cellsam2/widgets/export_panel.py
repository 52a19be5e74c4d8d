"""Export a labels layer (with its lineage) as CTC RES or GT/TRA, and evaluate it against GT.

Hand edits made with napari's paint tools are respected: the layer is made CTC-valid
(:func:`napari_cellsam2.ctc.repair.make_consistent`) before writing. Nothing the user made is
lost: replacing an existing RES or GT (or GEFF) is asked first and the old folder is moved to a
dated backup beside it; exporting a layer with no cell asks before writing a 0-track result.
The lineage can also be written as a GEFF graph beside the CTC folder.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from napari.layers import Labels
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..ctc.errors import CTCFormatError
from ..ctc.geff import GEFF_ENTRIES, geff_path_for
from ..ctc.repair import EmptyLabelsError
from ..ctc.writer import GT_ENTRIES, RES_ENTRIES, Existing, backup_path, check_output
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
        self.geff = QCheckBox("also write the lineage as GEFF (<folder>.geff)")
        self.write_res = QPushButton("Write RES")
        self.write_gt = QPushButton("Write GT/TRA")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self._cancel = threading.Event()
        self._then: list = []  # run once the current job has finished (see _run)
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
        form.addRow(self.geff)
        form.addRow(buttons)
        form.addRow("GT folder", _path_row(self.gt, "Ground-truth folder (NN_GT)", self))
        form.addRow(self.evaluate_button)
        form.addRow(self.table)

    def export(self, fmt: str) -> None:
        """Write the chosen layer in a worker, a frame at a time (progress bar, Cancel).

        Before anything runs: an output that cannot be written (a file, a folder holding other
        data, read-only) is refused with the reason, and replacing an earlier output is asked
        (the old one is then kept as ``<name>.backup-<date-time>``).
        """
        layer, out = self.layer.layer(), self.out.text().strip()
        if layer is None or not out:
            show_error("choose a labels layer and an output folder first")
            return
        folder = Path(out)
        if fmt == "gt" and not folder.name.endswith("_GT"):  # 01, 01_RES -> 01_GT
            folder = folder.parent / f"{folder.name.removesuffix('_RES')}_GT"
        targets = [(folder, GT_ENTRIES if fmt == "gt" else RES_ENTRIES)]
        if self.geff.isChecked():
            targets.append((geff_path_for(folder), GEFF_ENTRIES))
        try:
            for target, entries in targets:
                check_output(target, entries)
        except CTCFormatError as exc:
            show_error(str(exc))
            return
        existing = [t for t, _ in targets if t.is_dir() and any(t.iterdir())]
        backups = {t: backup_path(t) for t in existing}
        if existing and not self._confirm_replace(backups):
            show_info(f"export cancelled: {', '.join(str(t) for t in existing)} kept as it is")
            return
        choices = [backups.get(t, "refuse") for t, _ in targets]
        self._write(layer, fmt, folder, choices[0], choices[1] if len(choices) > 1 else None)

    def _confirm_replace(self, backups: dict[Path, Path]) -> bool:
        """Ask before replacing outputs; says where each old one goes."""
        lines = "\n".join(f"{t.name} -> {b.name}" for t, b in backups.items())
        answer = QMessageBox.question(
            self,
            "Replace existing output?",
            f"{', '.join(str(t) for t in backups)} already exists.\n\nReplace it? Nothing is "
            f"deleted: the current folder is moved to a backup beside it:\n{lines}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _confirm_empty(self, layer: Labels) -> bool:
        answer = QMessageBox.warning(
            self,
            "Empty labels layer",
            f"'{layer.name}' has no cell on any frame. Write an empty result (0 tracks) anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _write(
        self,
        layer: Labels,
        fmt: str,
        folder: Path,
        existing: Existing,
        geff_existing: Existing | None,
        allow_empty: bool = False,
    ) -> None:
        """The export job; ``geff_existing`` is None when no GEFF is wanted."""
        from ..ctc.geff import write_geff_with
        from ..ctc.repair import iter_export_labels

        labels, parents, first = layer_lineage_inputs(self.state.viewer, layer)
        cancel = self._cancel = threading.Event()
        bar = progress(total=len(labels), desc=f"writing {folder.name}")
        steps = iter_export_labels(
            folder, labels, parents, first, fmt, existing=existing, allow_empty=allow_empty
        )
        geff = geff_path_for(folder)

        def stream():  # cancelled: the temporary folder is removed, nothing is written
            result = yield from until_cancelled(steps, cancel)
            if result is not None and geff_existing is not None:  # both outputs or neither
                write_geff_with(
                    folder, existing, geff, result[0], result[1], first, existing=geff_existing
                )
            return result

        def done(result) -> None:
            if result is None:
                show_info(f"export cancelled: {folder} was not written")
                return
            _, lineage = result
            said = [f"wrote {folder}: {len(lineage)} tracks, {len(lineage.divisions)} divisions"]
            said += [f"the lineage as GEFF in {geff}"] if geff_existing is not None else []
            said += [
                f"the earlier {b.name.rsplit('.backup-', 1)[0]} is in {b}"
                for b in (existing, geff_existing)
                if isinstance(b, Path) and b.exists()
            ]
            show_info("; ".join(said))

        def failed(exc: Exception) -> None:
            if not isinstance(exc, EmptyLabelsError):
                show_error(str(exc))
                return

            def ask() -> None:  # after the failed job has finished: buttons, bar and state
                if self._confirm_empty(layer):
                    self._write(layer, fmt, folder, existing, geff_existing, allow_empty=True)
                else:
                    show_info(f"export cancelled: '{layer.name}' is empty, nothing written")

            self._then.append(ask)

        self._run(stream, bar, done, failed)

    def _run(self, stream, bar, on_return, on_error=None) -> None:
        """A cancellable job that reports ``(done, total)`` frames on ``bar``; what ``on_error``
        queues in ``_then`` runs once the job has finished."""

        def step(done_total: tuple[int, int]) -> None:
            bar.total = done_total[1]
            bar.update(done_total[0] - bar.n)

        starters = (self.write_res, self.write_gt, self.evaluate_button)

        def finished() -> None:
            bar.close()
            self.cancel_button.setEnabled(False)
            for button in starters:
                button.setEnabled(True)
            while self._then:
                self._then.pop(0)()

        self.cancel_button.setEnabled(True)
        for button in starters:  # one job at a time: Cancel stops the one that runs
            button.setEnabled(False)
        self.state.run_job(
            stream, on_yield=step, on_return=on_return, on_error=on_error, on_finish=finished
        )

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
        self.show_scores({})  # no earlier scores beside a new GT path while this one runs
        cancel = self._cancel = threading.Event()
        bar = progress(total=len(labels), desc="evaluating")

        def score():
            # a copy, read once, as export makes: tracking may write the live layer meanwhile,
            # and make_consistent copies only when it must relabel
            fixed, lineage = make_consistent(np.array(labels), parents, first, copy=False)
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
