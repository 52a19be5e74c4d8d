"""`cellsam2 evaluate`: a table on stdout, JSON on request, clear errors for bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import Lineage, write_gt, write_res


@pytest.fixture
def folders(tmp_path):
    labels = np.zeros((6, 48, 48), np.uint16)
    for t in range(6):
        labels[t, 4:12, 4 + 3 * t : 12 + 3 * t] = 1
        labels[t, 30:40, 30:40] = 2
    lineage = Lineage.from_labels(labels)
    gt = write_gt(tmp_path / "01_GT", labels, lineage, seg_frames=[0, 3])
    res = write_res(tmp_path / "01_RES", labels, lineage)
    short = write_res(tmp_path / "short", labels[:4], Lineage.from_labels(labels[:4]))
    return gt, res, short


def test_evaluate_prints_table_and_writes_json(tmp_path, capsys, folders):
    gt, res, _ = folders
    out = tmp_path / "scores.json"

    code = main(["evaluate", "--gt", str(gt), "--res", str(res), "--json", str(out)])

    assert code == 0
    stdout = capsys.readouterr().out
    header, row = stdout.splitlines()[:2]
    assert header.split()[:5] == ["Valid", "TRA", "SEG", "DET", "LNK"]
    assert row.split()[:6] == ["01_RES", "1.0000", "1.0000", "1.0000", "1.0000", "1.0000"]
    scores = json.loads(out.read_text())
    assert scores["TRA"] == scores["SEG"] == scores["DET"] == scores["LNK"] == 1.0
    assert scores["CCA"] is None  # no complete cell cycle in this ground truth


def test_evaluate_never_replaces_a_file_unasked(tmp_path, capsys, folders):
    """--json pointed at a file that exists is refused before scoring; --overwrite replaces it
    and keeps the old one as a dated backup; a path inside the GT or RES folder (here the
    GT's own lineage) is refused even with --overwrite."""
    gt, res, _ = folders
    lineage = gt / "TRA" / "man_track.txt"
    before = lineage.read_text()
    args = ["evaluate", "--gt", str(gt), "--res", str(res), "--json", str(lineage)]

    assert main(args) == 2
    assert lineage.read_text() == before
    assert main([*args, "--overwrite"]) == 2  # never inside the folders it scores
    assert "write the scores elsewhere" in capsys.readouterr().err
    assert lineage.read_text() == before

    scores = tmp_path / "scores.json"
    scores.write_text("{}")
    args = ["evaluate", "--gt", str(gt), "--res", str(res), "--json", str(scores)]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    (kept,) = tmp_path.glob("scores.json.backup-*")
    assert kept.read_text() == "{}" and json.loads(scores.read_text())["TRA"] == 1.0


def test_evaluate_reports_a_partial_result(capsys, folders):
    gt, _, short = folders

    assert main(["evaluate", "--gt", str(gt), "--res", str(short)]) == 0

    captured = capsys.readouterr()
    assert "lacks ground-truth frame(s) 4-5" in captured.err
    det = captured.out.splitlines()[0].split().index("DET")
    assert float(captured.out.splitlines()[1].split()[det + 1]) < 1.0


@pytest.mark.parametrize("which", ["--gt", "--res"])
def test_evaluate_missing_folder_fails_naming_it(tmp_path, capsys, folders, which):
    gt, res, _ = folders
    missing = tmp_path / "does_not_exist"
    args = {"--gt": str(gt), "--res": str(res), which: str(missing)}

    code = main(["evaluate", *[x for kv in args.items() for x in kv]])

    assert code != 0
    assert str(missing) in capsys.readouterr().err
