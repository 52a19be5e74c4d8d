"""Each kind of bad CTC input gets a CTCFormatError naming the file and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import (
    CTCFormatError,
    Lineage,
    OutputExistsError,
    open_path,
    write_gt,
    write_res,
)


def _fails(path: Path, match: str, culprit: Path) -> CTCFormatError:
    with pytest.raises(CTCFormatError, match=match) as info:
        open_path(path).validate()
    assert info.value.path == culprit
    assert str(culprit) in str(info.value)
    return info.value


def test_missing_folder(tmp_path):
    _fails(tmp_path / "nope", "folder is missing", tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", "folder is empty", tmp_path / "empty")


def test_missing_man_track(ctc_sequence):
    txt = ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt"
    txt.unlink()
    _fails(ctc_sequence, "lineage file is missing", txt)


@pytest.mark.parametrize(
    ("content", "match"),
    [("1 0 2\n", "expected 4 columns"), ("1 0 2 0 7\n", "got 5"), ("1 a 2 0\n", "non-integer")],
)
def test_malformed_lineage_lines(ctc_sequence, content, match):
    txt = ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt"
    txt.write_text(content)
    err = _fails(ctc_sequence, match, txt)
    assert "line 1" in str(err)


def test_label_missing_inside_its_track(ctc_sequence):
    frame = ctc_sequence.parent / "01_GT" / "TRA" / "man_track001.tif"
    data = tifffile.imread(frame)
    data[data == 4] = 0
    tifffile.imwrite(frame, data)
    _fails(ctc_sequence, "label 4 is missing on frame 1", frame.parent / "man_track.txt")


def test_a_typo_in_a_track_end_is_named_without_exhausting_memory(ctc_sequence):
    """``4 0 1000000000 0``: the check built the set of a billion frame numbers (MemoryError,
    a traceback from the CLI); the missing frame is named right after the last one present."""
    txt = ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt"
    lines = txt.read_text().splitlines()
    fixed = [("4 0 1000000000 0" if line.split()[0] == "4" else line) for line in lines]
    txt.write_text("\n".join(fixed) + "\n")
    _fails(ctc_sequence, "label 4 is missing on frame 6 inside its track 0..1000000000", txt)


def test_parent_ending_at_daughter_start(ctc_sequence):
    txt = ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt"
    txt.write_text("1 0 3 0\n2 3 5 1\n3 3 5 1\n4 0 5 0\n")
    _fails(ctc_sequence, "parent 1 ends at frame 3, at or after its daughter 2", txt)


def test_duplicate_labels(ctc_sequence):
    txt = ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt"
    txt.write_text("1 0 2 0\n2 3 5 1\n3 3 5 1\n4 0 5 0\n2 0 1 0\n")
    _fails(ctc_sequence, "duplicate label 2", txt)


def test_frames_of_different_shapes(ctc_sequence):
    frame = ctc_sequence / "t002.tif"
    tifffile.imwrite(frame, np.zeros((10, 10), np.uint16))
    _fails(ctc_sequence, r"frame shape \(10, 10\) differs", frame)


def test_corrupt_truncated_tiff(ctc_sequence):
    frame = ctc_sequence / "t004.tif"
    frame.write_bytes(frame.read_bytes()[:200])
    _fails(ctc_sequence, "corrupt or truncated TIFF", frame)


def test_float_label_image(ctc_sequence):
    frame = ctc_sequence.parent / "01_GT" / "TRA" / "man_track000.tif"
    tifffile.imwrite(frame, tifffile.imread(frame).astype(np.float32))
    _fails(ctc_sequence, "label image must be integer", frame)


def test_negative_label_image(ctc_sequence):
    frame = ctc_sequence.parent / "01_GT" / "TRA" / "man_track002.tif"
    data = tifffile.imread(frame).astype(np.int16)
    data[0, 0] = -3
    tifffile.imwrite(frame, data)
    _fails(ctc_sequence, "negative values", frame)


def test_gap_in_frame_numbering(ctc_sequence):
    (ctc_sequence / "t002.tif").unlink()
    _fails(ctc_sequence, r"gaps in frame numbering: missing frame\(s\) 2", ctc_sequence)


def test_mixed_three_and_four_digit_names(ctc_sequence):
    (ctc_sequence / "t005.tif").rename(ctc_sequence / "t0005.tif")
    _fails(ctc_sequence, "mixed 3- and 4-digit frame names", ctc_sequence)


def test_other_digit_counts_only_where_asked(ctc_sequence):
    """CTC names frames with 3 or 4 digits; published copies of CTC data sometimes renumber
    them (6 digits): refused by default, read with ``digits=None`` (scripts/make_real_split.py)."""
    from napari_cellsam2.ctc.frames import discover_frames

    for path in sorted(ctc_sequence.glob("t*.tif")):
        path.rename(path.with_name(f"t{int(path.stem[1:]):06d}.tif"))
    _fails(
        ctc_sequence,
        "frame number must have 3 or 4 digits, got '000000'",
        ctc_sequence / "t000000.tif",
    )
    found = discover_frames(ctc_sequence, "t", digits=None)
    assert found.indices == tuple(range(len(found.paths))) and found.digits == 6
    (ctc_sequence / "t000002.tif").rename(ctc_sequence / "t0002.tif")
    with pytest.raises(CTCFormatError, match="mixed 4- and 6-digit frame names"):
        discover_frames(ctc_sequence, "t", digits=None)


def test_more_than_one_sequence_where_one_is_expected(ctc_sequence):
    root = ctc_sequence.parent
    shutil.copytree(root / "01", root / "02")
    _fails(root, "holds 2 sequences", root)


def test_folder_without_frames(tmp_path):
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "notes.txt").write_text("x")
    _fails(tmp_path / "01", "no 'tNNN.tif' frames", tmp_path / "01")


def test_writer_rejects_invalid_result_and_leaves_nothing(tmp_path, division_labels):
    bad = Lineage.parse("1 0 3 0\n2 3 5 1\n3 3 5 1\n4 0 5 0\n")
    with pytest.raises(CTCFormatError):
        write_res(tmp_path / "01_RES", division_labels, bad)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_float_labels(tmp_path, division_labels):
    lin = Lineage.from_labels(division_labels)
    with pytest.raises(CTCFormatError, match="labels must be integers"):
        write_gt(tmp_path / "01_GT", division_labels.astype(float), lin)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_folder(tmp_path, division_labels, monkeypatch):
    lin = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    out = write_res(tmp_path / "01_RES", division_labels, lin)
    before = sorted(p.name for p in out.iterdir())

    def explode(self, path):  # fail while writing the lineage, after the masks
        raise OSError("disk full")

    monkeypatch.setattr(Lineage, "write", explode)
    with pytest.raises(OSError, match="disk full"):
        write_res(out, division_labels, lin, existing="replace")
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["01_RES"]


def test_cli_info_fails_nonzero_naming_the_file(ctc_sequence, capsys):
    frame = ctc_sequence / "t003.tif"
    frame.write_bytes(b"not a tiff")
    assert main(["info", str(ctc_sequence)]) == 2
    err = capsys.readouterr().err
    assert str(frame) in err and "corrupt or truncated TIFF" in err


def test_writer_never_replaces_a_folder_of_another_kind(ctc_sequence, division_labels):
    """A mistyped output path (here the image folder) is refused, not deleted."""
    before = sorted(p.name for p in ctc_sequence.iterdir())
    lin = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    with pytest.raises(CTCFormatError, match="refusing to replace it"):
        write_res(ctc_sequence, division_labels, lin)
    assert sorted(p.name for p in ctc_sequence.iterdir()) == before
    write_res(ctc_sequence.parent / "01_RES", division_labels, lin)
    with pytest.raises(OutputExistsError):  # an earlier result: refused unless asked
        write_res(ctc_sequence.parent / "01_RES", division_labels, lin)
    write_res(ctc_sequence.parent / "01_RES", division_labels, lin, existing="replace")


def test_written_folders_get_normal_permissions(tmp_path, division_labels):
    import os

    out = write_res(tmp_path / "01_RES", division_labels, Lineage.from_labels(division_labels))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
