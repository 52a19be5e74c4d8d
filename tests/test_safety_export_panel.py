"""The dock's Export tab never replaces RES or GT silently and never writes an empty result
unasked (issue 11): it asks (QMessageBox, patched here) and keeps the old folder as a backup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from qtpy.QtWidgets import QMessageBox

from napari_cellsam2.ctc import Lineage, open_path
from napari_cellsam2.widgets.export_panel import ExportPanel
from napari_cellsam2.widgets.state import DockState

pytestmark = pytest.mark.gui
YES, NO = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No


@pytest.fixture
def panel(make_napari_viewer, qtbot, division_labels):
    viewer = make_napari_viewer()
    viewer.add_labels(division_labels, name="cells", metadata={"cellsam2_parents": {2: 1, 3: 1}})
    viewer.add_labels(np.zeros_like(division_labels), name="nothing")
    panel = ExportPanel(DockState(viewer))
    qtbot.addWidget(panel)
    return panel


def answer(monkeypatch, kind: str, reply) -> list[str]:
    """Patch QMessageBox.<kind> to reply; returns the texts it was asked."""
    asked: list[str] = []

    def fake(parent, title, text, *args):
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, kind, fake)
    return asked


def export(qtbot, panel: ExportPanel, fmt: str) -> None:
    panel.export(fmt)
    qtbot.waitUntil(lambda: not panel.state.busy and panel.write_res.isEnabled(), timeout=30_000)


def test_replacing_gt_asks_and_keeps_a_backup(panel, qtbot, tmp_path, monkeypatch):
    panel.layer.select("cells")
    panel.out.setText(str(tmp_path / "01_GT"))
    export(qtbot, panel, "gt")
    hand_made = tmp_path / "01_GT" / "TRA" / "man_track000.tif"
    tifffile.imwrite(hand_made, np.full((40, 30), 7, np.uint16))  # a correction made later

    asked = answer(monkeypatch, "question", NO)
    export(qtbot, panel, "gt")
    assert len(asked) == 1 and "01_GT" in asked[0] and "backup" in asked[0]
    assert (tifffile.imread(hand_made) == 7).all() and not list(tmp_path.glob("*.backup-*"))

    asked = answer(monkeypatch, "question", YES)
    export(qtbot, panel, "gt")
    (backup,) = tmp_path.glob("01_GT.backup-*")
    assert backup.name in asked[0]
    assert (tifffile.imread(backup / "TRA" / "man_track000.tif") == 7).all()
    assert Lineage.read(tmp_path / "01_GT" / "TRA" / "man_track.txt").parents == {2: 1, 3: 1}


def test_empty_layer_warns_before_writing_a_zero_track_result(panel, qtbot, tmp_path, monkeypatch):
    panel.layer.select("nothing")
    panel.out.setText(str(tmp_path / "01_RES"))
    asked = answer(monkeypatch, "warning", NO)
    export(qtbot, panel, "res")
    assert len(asked) == 1 and "'nothing' has no cell" in asked[0]
    assert not (tmp_path / "01_RES").exists()

    asked = answer(monkeypatch, "warning", YES)
    export(qtbot, panel, "res")
    assert len(asked) == 1 and len(open_path(tmp_path / "01_RES").res.lineage) == 0


def test_export_writes_a_geff_graph_beside_the_res(panel, qtbot, tmp_path: Path):
    import geff

    panel.layer.select("cells")
    panel.out.setText(str(tmp_path / "01_RES"))
    panel.geff.setChecked(True)
    export(qtbot, panel, "res")
    graph, _ = geff.read(tmp_path / "01_RES.geff")
    assert [n for n in graph.nodes if graph.out_degree(n) == 2]  # the division
    assert open_path(tmp_path / "01_RES").res.lineage.parents == {2: 1, 3: 1}


def test_a_new_evaluation_clears_the_previous_scores(panel, qtbot, tmp_path):
    """Stale scores (all 1.0 from another GT) must not stay beside a new GT path (issue 11)."""
    panel.show_scores({"TRA": 1.0, "SEG": 1.0})
    panel.layer.select("cells")
    panel.gt.setText(str(tmp_path / "missing_GT"))  # this evaluation fails
    panel.evaluate()
    qtbot.waitUntil(
        lambda: not panel.state.busy and panel.evaluate_button.isEnabled(), timeout=30_000
    )
    assert panel.table.rowCount() == 0
