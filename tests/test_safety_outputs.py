"""Writers never replace a user's GT or RES silently, and never write an empty result unasked
(issue 11): the ``existing`` choice, dated backups, atomic replacement, the napari writer."""

from __future__ import annotations

import warnings
from datetime import datetime

import numpy as np
import pytest
import tifffile

from napari_cellsam2._writer import write_labels
from napari_cellsam2.ctc import (
    CTCFormatError,
    CTCWarning,
    Lineage,
    OutputExistsError,
    backup_path,
    open_path,
    write_gt,
    write_res,
)
from napari_cellsam2.ctc.geff import lineage_graph, write_geff
from napari_cellsam2.ctc.repair import EmptyLabelsError, export_labels


def test_gt_is_refused_by_default_and_replaced_only_into_a_backup(tmp_path, division_labels):
    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    gt = write_gt(tmp_path / "01_GT", division_labels, lineage)
    hand_made = tifffile.imread(gt / "TRA" / "man_track000.tif")

    with pytest.raises(OutputExistsError, match="01_GT"):
        write_gt(gt, division_labels[::-1].copy(), Lineage.from_labels(division_labels[::-1]))
    np.testing.assert_array_equal(tifffile.imread(gt / "TRA" / "man_track000.tif"), hand_made)

    backup = backup_path(gt, datetime(2026, 11, 27, 21, 30, 0))
    assert backup.name == "01_GT.backup-20261127-213000"
    flipped = division_labels[::-1].copy()
    write_gt(gt, flipped, Lineage.from_labels(flipped), existing=backup)
    np.testing.assert_array_equal(tifffile.imread(backup / "TRA" / "man_track000.tif"), hand_made)
    np.testing.assert_array_equal(tifffile.imread(gt / "TRA" / "man_track000.tif"), flipped[0])
    backup.mkdir(exist_ok=True)
    assert backup_path(gt, datetime(2026, 11, 27, 21, 30, 0)).name.endswith("213000-2")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_failed_replacement_keeps_the_old_folder_and_makes_no_backup(
    tmp_path, division_labels, monkeypatch
):
    from napari_cellsam2.ctc import writer

    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    res = write_res(tmp_path / "01_RES", division_labels, lineage)
    backup = backup_path(res)
    imwrite, calls = tifffile.imwrite, []

    def disk_full_on_frame_3(path, data, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        imwrite(path, data, **kwargs)

    monkeypatch.setattr(writer.tifffile, "imwrite", disk_full_on_frame_3)
    with pytest.raises(OSError, match="No space"):
        write_res(res, division_labels, Lineage.from_labels(division_labels), existing=backup)
    assert not backup.exists() and Lineage.read(res / "res_track.txt").parents == {2: 1, 3: 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES"]  # no temporary folder
    with pytest.raises(OutputExistsError):
        write_res(res, division_labels, lineage, existing="refuse")


def test_export_refuses_empty_labels_unless_asked(tmp_path):
    empty = np.zeros((3, 8, 8), np.uint16)
    with pytest.raises(EmptyLabelsError, match="no cell"):
        export_labels(tmp_path / "01_RES", empty)
    assert not (tmp_path / "01_RES").exists()
    _, lineage = export_labels(tmp_path / "01_RES", empty, allow_empty=True)
    assert len(lineage) == 0 and open_path(tmp_path / "01_RES").res is not None


def test_napari_writer_refuses_empty_and_backs_up_an_earlier_result(tmp_path, division_labels):
    out = tmp_path / "01_RES"
    with pytest.raises(EmptyLabelsError):
        write_labels(str(out), np.zeros((2, 5, 5), np.uint8), {})
    write_labels(str(out), division_labels, {"metadata": {"cellsam2_parents": {2: 1, 3: 1}}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_labels(str(out), division_labels, {})
    (backup,) = tmp_path.glob("01_RES.backup-*")
    assert any(issubclass(w.category, CTCWarning) and str(backup) in str(w.message) for w in caught)
    assert Lineage.read(backup / "res_track.txt").parents == {2: 1, 3: 1}


def test_geff_graph_has_one_node_per_cell_and_frame_and_division_edges(tmp_path, division_labels):
    import geff

    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    node_ids, props, edges = lineage_graph(division_labels, lineage, first_frame=5)
    assert len(node_ids) == int(sum(len(np.unique(f)) - 1 for f in division_labels))
    assert props["t"].min() == 5 and set(props["lineage_id"]) == {1, 4}
    path = write_geff(tmp_path / "01_RES.geff", division_labels, lineage, 5)
    geff.validate_structure(path)
    graph, _ = geff.read(path)
    assert graph.number_of_edges() == len(edges)
    with pytest.raises(OutputExistsError):
        write_geff(path, division_labels, lineage, 5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("x")
    with pytest.raises(CTCFormatError, match="holds other files"):
        write_geff(tmp_path / "other", division_labels, lineage, existing="replace")
