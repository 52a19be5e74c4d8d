"""The real ``cellsam2`` console script: nothing the user made is lost, every failure says why
in one line (issue 11). Each test runs the installed script in a subprocess, as a user would.

Read-only outputs are made read-only for real: as root (CI containers) permission bits do not
stop writes, so the script then runs as user ``nobody`` (``setpriv``) in a world-readable folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellsam2.ctc import Lineage, open_path, write_gt, write_images, write_res

CELLSAM2 = Path(sys.executable).with_name("cellsam2")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def run(*args: str | Path, as_user: list[str] | None = None, **env: str):
    """Run the console script; returns the CompletedProcess (text)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [*(as_user or []), str(CELLSAM2), *map(str, args)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )


def one_error_line(proc, *expected: str) -> str:
    """Exit 2 with exactly one 'error: …' line (no traceback) holding every ``expected``."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="cellsam2-ro-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def readonly(shared_dir: Path, division_labels: np.ndarray):
    """``(folder, run_as)``: a CTC sequence in a folder the script cannot write to."""
    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    rng = np.random.default_rng(0)
    images = (division_labels > 0) * 1000 + rng.integers(0, 50, division_labels.shape)
    write_images(shared_dir / "01", images.astype(np.uint16))
    write_gt(shared_dir / "01_GT", division_labels, lineage, seg_frames=[0, 3])
    write_res(shared_dir / "01_RES", division_labels, lineage)
    home = shared_dir / "home"
    home.mkdir()
    home.chmod(0o777)
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only")
        for path in [shared_dir, *shared_dir.rglob("*")]:
            if path != home:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return shared_dir, NOBODY
    for path in [shared_dir, *shared_dir.rglob("*")]:
        if path.is_dir() and path != home:
            path.chmod(0o555)
    return shared_dir, []


def test_read_only_outputs_fail_in_one_line_naming_the_path(readonly):
    folder, as_user = readonly
    env = {"HOME": str(folder / "home"), "MPLCONFIGDIR": str(folder / "home")}
    before = sorted(p.name for p in folder.rglob("*"))

    track = ["track", folder / "01", "--prompts", "gt-first-frame", "--model", "tiny"]
    proc = run(*track, "--out", folder / "02_RES", "--device", "cpu", as_user=as_user, **env)
    one_error_line(proc, str(folder), "cannot write here")
    assert "tracking" not in proc.stderr  # refused before the model loaded

    proc = run("synth", "nuclei", "--out", folder / "data", as_user=as_user, **env)
    one_error_line(proc, str(folder), "cannot write here")

    gt, res = folder / "01_GT", folder / "01_RES"
    proc = run("evaluate", "--gt", gt, "--res", res, "--json", folder / "s.json", as_user=as_user)
    one_error_line(proc, str(folder), "cannot write here")

    proc = run(
        "train",
        f"launcher.experiment_log_dir={folder / 'run'}",
        f"dataset.data_dir={folder}",
        as_user=as_user,
        **env,
    )
    one_error_line(proc, str(folder), "cannot write here")
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing half-written


def test_track_never_replaces_a_result_silently(ctc_sequence: Path, tmp_path: Path):
    out = tmp_path / "01_RES"
    base = ["track", ctc_sequence, "--prompts", "gt-first-frame", "--model", "tiny"]
    base += ["--device", "cpu", "--direction", "forward", "--out", out]
    first = run(*base)
    assert first.returncode == 0, first.stderr
    assert "RANDOM weights" in first.stderr  # every run of the tiny model says so
    marker = out / "mask000.tif"
    original = tifffile.imread(marker)
    tifffile.imwrite(marker, np.zeros_like(original))  # "hand-edited": must survive

    again = run(*base)
    one_error_line(again, str(out), "--overwrite")
    np.testing.assert_array_equal(tifffile.imread(marker), 0)

    replaced = run(*base, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    backups = list(tmp_path.glob("01_RES.backup-*"))
    assert len(backups) == 1 and f"moved to {backups[0]}" in replaced.stdout
    np.testing.assert_array_equal(tifffile.imread(backups[0] / "mask000.tif"), 0)  # kept
    np.testing.assert_array_equal(tifffile.imread(marker), original)  # new result in place
    open_path(out).validate()


def test_track_refuses_a_folder_with_other_files_before_tracking(ctc_sequence: Path):
    proc = run(
        "track",
        ctc_sequence,
        "--prompts",
        "gt-first-frame",
        "--model",
        "tiny",
        "--overwrite",
        "--out",
        ctc_sequence,  # the image folder itself: a slip that must never delete images
    )
    one_error_line(proc, str(ctc_sequence), "holds other files")
    assert "tracking" not in proc.stderr and "RANDOM" not in proc.stderr  # nothing ran
    assert len(list(ctc_sequence.glob("t*.tif"))) == 6


def test_synth_into_an_existing_folder_names_the_option(tmp_path: Path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = run("synth", "nuclei", "--out", out, "--frames", "3")
    line = one_error_line(proc, str(out), "--overwrite")
    assert "overwrite=True" not in line
    assert (out / "notes.txt").read_text() == "mine"


def test_info_says_what_a_folder_can_be_used_for(tmp_path: Path, division_labels):
    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    zstack = np.zeros((3, 5, 16, 16), np.uint16)  # (T, Z, Y, X): track takes no volumes
    write_images(tmp_path / "01", zstack)
    proc = run("info", tmp_path / "01")
    assert proc.returncode == 0, proc.stderr
    assert "valid      yes" not in proc.stdout
    assert "track      no:" in proc.stdout and "cannot use these images" in proc.stdout

    write_images(tmp_path / "02", (division_labels * 100).astype(np.uint16))
    write_gt(tmp_path / "02_GT", division_labels, lineage)
    proc = run("info", tmp_path / "02")
    for line in ("track      yes", "train      yes", "evaluate   yes: as --gt", "valid      yes"):
        assert line in proc.stdout, proc.stdout

    frame = tmp_path / "02" / "t000.tif"
    one_error_line(run("info", frame), str(frame), "is a file, not a folder")

    seg_only = tmp_path / "03_GT"  # GT with SEG alone (was an AttributeError traceback)
    write_gt(seg_only, division_labels, lineage, seg_frames=[0, 3])
    shutil.rmtree(seg_only / "TRA")
    proc = run("info", seg_only)
    assert proc.returncode == 0, proc.stderr
    assert "GT/SEG     2 annotated frames" in proc.stdout


def test_geff_from_track_and_from_export_geff(ctc_sequence: Path, tmp_path: Path):
    import geff

    out, graph = tmp_path / "01_RES", tmp_path / "lineage.geff"
    proc = run(
        "track",
        ctc_sequence,
        "--prompts",
        "gt-first-frame",
        "--model",
        "tiny",
        "--direction",
        "forward",
        "--out",
        out,
        "--geff",
        graph,
    )
    assert proc.returncode == 0, proc.stderr
    g, _ = geff.read(graph)
    tracks = Lineage.read(out / "res_track.txt")
    assert {d["track_id"] for _, d in g.nodes(data=True)} == set(tracks.tracks)

    gt = ctc_sequence.parent / "01_GT"
    proc = run("export-geff", gt)
    assert proc.returncode == 0, proc.stderr
    g, meta = geff.read(tmp_path / "01_GT.geff")  # beside 01_GT: never inside ground truth
    mother = [n for n in g.nodes if g.out_degree(n) == 2]  # the division of cell 1 at frame 3
    assert len(mother) == 1 and g.nodes[mother[0]]["track_id"] == 1
    assert sorted(g.nodes[d]["track_id"] for d in g.successors(mother[0])) == [2, 3]
    assert [a.name for a in meta.axes] == ["t", "y", "x"]
    one_error_line(run("export-geff", gt), "01_GT.geff", "--overwrite")
    assert run("export-geff", gt, "--overwrite").returncode == 0
    assert len(list(tmp_path.glob("01_GT.geff.backup-*"))) == 1


def test_synth_styles_invert_and_generator_options(tmp_path: Path):
    """`cellsam2 synth --invert --set key=value`: the phase-contrast look and generator knobs
    (issue 10); an unknown option is one line naming the valid ones."""
    plain, dark = tmp_path / "plain", tmp_path / "dark"
    for out, extra in ((plain, []), (dark, ["--invert"])):
        proc = run(
            "synth",
            "nuclei",
            "--out",
            out,
            "--sequences",
            "3",
            "--frames",
            "2",
            "--set",
            "n_cells=3",
            "--set",
            "radius=6.5",
            *extra,
        )
        assert proc.returncode == 0, proc.stderr
    a = tifffile.imread(plain / "train" / "CTC" / "01" / "t000.tif").astype(np.int64)
    b = tifffile.imread(dark / "train" / "CTC" / "01" / "t000.tif").astype(np.int64)
    mask = tifffile.imread(plain / "train" / "CTC" / "01_GT" / "TRA" / "man_track000.tif") > 0
    assert a[mask].mean() > a[~mask].mean() and b[mask].mean() < b[~mask].mean()
    assert (
        len(
            np.unique(
                tifffile.imread(plain / "train" / "CTC" / "01_GT" / "TRA" / "man_track000.tif")
            )
        )
        <= 4
    )
    proc = run("synth", "nuclei", "--out", tmp_path / "x", "--set", "bogus=1")
    one_error_line(proc, "bogus", "n_cells")
    proc = run("synth", "nuclei", "--out", tmp_path / "x", "--set", "n_cells=2.5")
    one_error_line(proc, "n_cells=2.5", "whole number")  # was a TypeError traceback
    assert not (tmp_path / "x").exists()
