"""`cellsam2 track` end to end on a tiny synthetic CTC sequence with the tiny random model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import CTCFormatError, open_path


def test_track_from_gt_first_frame_and_evaluate(ctc_sequence: Path, tmp_path: Path, capsys):
    out = tmp_path / "01_RES"
    gt = tmp_path / "01_GT"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "gt-first-frame"]
    rc = main([*argv, "--out", str(out), "--device", "cpu", "--evaluate", str(gt)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    seq = open_path(out)
    seq.validate()  # every mask read, lineage checked against them
    assert seq.res.masks.indices == tuple(range(6))
    # the first frame is the GT TRA frame: mask prompts come back as given
    np.testing.assert_array_equal(
        tifffile.imread(out / "mask000.tif"), tifffile.imread(gt / "TRA" / "man_track000.tif")
    )
    assert "wrote" in printed.out and "TRA" in printed.out and "SEG" in printed.out


def test_track_from_a_prompt_file_with_split_divisions(ctc_sequence: Path, tmp_path: Path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("object_id,frame,x,y,label\n1,0,4,9,1\n4,0,21,28,1\n4,0,2,2,0\n")
    out = tmp_path / "01_RES"
    rc = main(
        [
            "track",
            str(ctc_sequence),
            "--model",
            "tiny",
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--divisions",
            "split",
            "--direction",
            "forward",
        ]
    )
    assert rc == 0
    res = open_path(out).res
    open_path(out).validate()
    assert {1, 4} <= set(res.lineage.tracks)


def test_track_errors_name_the_culprit(ctc_sequence: Path, tmp_path: Path, capsys):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("object_id,frame,x,y\n1,0,4,9\n2,0,99,9\n")
    out = tmp_path / "01_RES"
    base = ["track", "--model", "tiny", "--out", str(out)]
    assert main([*base, str(ctc_sequence), "--prompts", str(prompts)]) == 2
    assert f"{prompts} line 3: point (x=99" in capsys.readouterr().err
    assert not out.exists()

    images_only = tmp_path / "other" / "01"
    shutil.copytree(ctc_sequence, images_only)
    assert main([*base, str(images_only), "--prompts", "gt-first-frame"]) == 2
    assert "no GT TRA" in capsys.readouterr().err

    seeded = [*base, str(ctc_sequence), "--prompts", "gt-first-frame", "--device", "cpu"]
    assert main([*seeded, "--precision", "bf16"]) == 2
    assert "bf16 precision needs a CUDA device" in capsys.readouterr().err
    assert not out.exists()
    assert main([*seeded, "--precision", "fp32"]) == 0 and out.is_dir()


def test_a_failed_geff_leaves_the_earlier_result_in_place(
    ctc_sequence: Path, tmp_path: Path, capsys, monkeypatch
):
    """--overwrite --geff: the RES is written first; when the GEFF then fails, the new RES is
    taken back and the earlier one (moved to a backup) returns: both outputs or neither (the
    dock's export goes through the same ctc.geff.write_geff_with)."""
    from napari_cellsam2.ctc import geff

    out = tmp_path / "01_RES"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "gt-first-frame"]
    argv += ["--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(geff, "write_geff", full_disk)
    assert main([*argv, "--overwrite", "--geff", str(tmp_path / "01.geff")]) == 2
    assert "No space left" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if "backup" in p.name] == []


def test_evaluate_and_geff_paths_are_checked_before_tracking(ctc_sequence: Path, tmp_path: Path):
    """A wrong --evaluate folder, or a GEFF inside the RES folder (which then refuses every
    --overwrite), fails before anything is tracked or written."""
    out = tmp_path / "01_RES"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "gt-first-frame"]
    argv += ["--out", str(out), "--device", "cpu"]
    assert main([*argv, "--evaluate", str(tmp_path / "nope_GT")]) == 2
    assert main([*argv, "--geff", str(out / "lineage.geff")]) == 2
    assert not out.exists()
    from napari_cellsam2.tracking.run import track_ctc_sequence  # the rule is the API's

    with pytest.raises(CTCFormatError, match="must go beside"):
        track_ctc_sequence(ctc_sequence, "gt-first-frame", "tiny", out, geff=out / "x.geff")
    assert not out.exists()
