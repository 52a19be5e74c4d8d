"""Synthetic time-lapse generators and the synthetic dataset writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellsam2.ctc import Lineage, open_dataset
from napari_cellsam2.datasets import (
    SyntheticSequence,
    mother_machine,
    nuclei_field,
    sample_sequence,
    sequence_seed,
    split_counts,
    write_dataset,
)

MIN_AREA = 15
# Small nuclei settings for the (slower, file-writing) dataset tests.
SMALL_NUCLEI = {"height": 48, "width": 48, "n_cells": 3, "radius": 5.0}


@pytest.fixture(scope="module")
def mm() -> SyntheticSequence:
    return mother_machine()


@pytest.fixture(scope="module")
def nuclei() -> SyntheticSequence:
    return nuclei_field()


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def assert_ctc_lineage(seq: SyntheticSequence) -> Lineage:
    """CTC-valid lineage with real divisions (2 daughters right after the mother ends)."""
    lineage = Lineage.from_labels(seq.labels, seq.parents)
    lineage.validate(seq.labels)
    assert set(seq.parents) <= set(lineage.tracks)
    for mother, daughters in lineage.divisions.items():
        assert len(daughters) == 2, (mother, daughters)
        for d in daughters:
            assert lineage[d].begin == lineage[mother].end + 1
    for t, frame in enumerate(seq.labels):
        areas = np.bincount(frame.ravel())[1:]
        assert areas[areas > 0].min() >= MIN_AREA, f"object below min area on frame {t}"
    np.testing.assert_array_equal(seq.seg, seq.labels)
    return lineage


@pytest.mark.parametrize(
    "generate",
    [
        lambda seed: mother_machine(frames=12, seed=seed),
        lambda seed: nuclei_field(frames=8, height=64, width=64, n_cells=4, seed=seed),
    ],
    ids=["mother-machine", "nuclei"],
)
def test_same_seed_same_sequence_other_seed_differs(generate):
    a, b, c = generate(3), generate(3), generate(4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.parents == b.parents
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("name", ["mm", "nuclei"])
def test_default_sequences_have_valid_lineage_with_divisions(name, request):
    seq = request.getfixturevalue(name)
    lineage = assert_ctc_lineage(seq)
    assert len(lineage.divisions) >= 1
    assert seq.images.dtype == np.uint16 and seq.labels.dtype == np.uint16


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds_stay_ctc_valid(seed):
    assert_ctc_lineage(mother_machine(frames=40, seed=seed))
    assert_ctc_lineage(nuclei_field(frames=20, seed=seed))


def test_mother_machine_cells_are_pushed_out_of_the_open_end(mm):
    frames, height, width = mm.labels.shape
    assert height >= 4 * width
    lineage = Lineage.from_labels(mm.labels, mm.parents)
    exits = [t for t in lineage if t.end < frames - 1 and t.label not in lineage.divisions]
    assert exits, "no cell left the channel"
    for track in lineage:
        tops = [
            np.argwhere(mm.labels[t] == track.label)[:, 0].min()
            for t in range(track.begin, track.end + 1)
        ]
        assert np.all(np.diff(tops) >= 0), f"cell {track.label} moved towards the closed end"
    for track in exits:
        rows = np.argwhere(mm.labels[track.end] == track.label)[:, 0]
        assert rows.max() == height - 1, f"cell {track.label} vanished away from the open end"


def test_mother_machine_cells_are_rods_narrower_than_the_channel(mm):
    widths, lengths = [], []
    for label in np.unique(mm.labels[0])[1:]:
        rows, cols = np.nonzero(mm.labels[0] == label)
        widths.append(np.ptp(cols) + 1)
        lengths.append(np.ptp(rows) + 1)
    channel = 0.75 * mm.labels.shape[2]
    assert 0.55 * channel <= np.median(widths) <= 0.75 * channel
    assert np.median(lengths) > 1.5 * np.median(widths)


def test_mother_machine_daughters_replace_their_mother(mm):
    lineage = Lineage.from_labels(mm.labels, mm.parents)
    for mother, daughters in lineage.divisions.items():
        before = mm.labels[lineage[mother].end] == mother
        for d in daughters:
            after = mm.labels[lineage[d].begin] == d
            assert np.count_nonzero(before & after) > 0.5 * np.count_nonzero(after)


@pytest.mark.parametrize("name", ["mm", "nuclei"])
def test_images_are_noisy_and_cells_brighter_than_background(name, request):
    seq = request.getfixturevalue(name)
    cells = seq.labels > 0
    for t in (0, seq.frames - 1):
        frame = seq.images[t].astype(float)
        assert frame[cells[t]].mean() > 1.5 * frame[~cells[t]].mean()
    background = seq.images[~cells].astype(float)
    assert background.std() > 2.0
    # Shot/read noise: consecutive frames differ even where nothing moves.
    still = ~cells[0] & ~cells[1]
    assert np.abs(seq.images[0][still].astype(float) - seq.images[1][still]).mean() > 1.0


def test_domains_differ_in_background_level(mm, nuclei):
    mm_background = np.median(mm.images[mm.labels == 0])
    nuclei_background = np.median(nuclei.images[nuclei.labels == 0])
    assert abs(float(nuclei_background) - float(mm_background)) > 100


def test_nuclei_daughters_sit_either_side_of_their_mother(nuclei):
    lineage = Lineage.from_labels(nuclei.labels, nuclei.parents)
    assert lineage.divisions
    for mother, (d1, d2) in lineage.divisions.items():
        m = _centroid(nuclei.labels[lineage[mother].end] == mother)
        a = _centroid(nuclei.labels[lineage[d1].begin] == d1) - m
        b = _centroid(nuclei.labels[lineage[d2].begin] == d2) - m
        assert np.dot(a, b) < 0, f"daughters of {mother} on the same side"
        assert np.linalg.norm((a + b) / 2) < 4.0


def test_nuclei_leaving_the_field_end_their_track():
    seq = nuclei_field(frames=40, height=48, width=48, n_cells=3, radius=5.0, speed=3.0, seed=5)
    lineage = assert_ctc_lineage(seq)
    exits = [t for t in lineage if t.end < seq.frames - 1 and t.label not in lineage.divisions]
    assert exits, "expected a nucleus to drift out with a fast random walk in a small field"
    for track in exits:
        rows, cols = np.nonzero(seq.labels[track.end] == track.label)
        assert rows.min() == 0 or cols.min() == 0 or rows.max() == 47 or cols.max() == 47


def test_sample_sequence_is_a_small_fixed_mother_machine():
    seq = sample_sequence()
    assert seq.images.shape == (40, 256, 32)
    assert len(assert_ctc_lineage(seq).divisions) >= 1
    np.testing.assert_array_equal(seq.images, sample_sequence().images)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mother_machine(width=4), "width"),
        (lambda: mother_machine(frames=0), "frames"),
        (lambda: mother_machine(height=40, width=32), "height"),
        (lambda: nuclei_field(height=32, width=32, n_cells=40, radius=6), "cannot place"),
        (lambda: nuclei_field(radius=1), "radius"),
    ],
)
def test_bad_generator_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_split_rule():
    assert split_counts(3) == (1, 1, 1)
    assert split_counts(5) == (3, 1, 1)
    assert split_counts(20) == (16, 2, 2)
    with pytest.raises(ValueError, match="sequences must be >= 3"):
        split_counts(2)


def test_write_dataset_writes_ctc_splits(tmp_path: Path):
    out = write_dataset(tmp_path / "ds", "nuclei", sequences=3, frames=7, seed=1, **SMALL_NUCLEI)
    assert out == tmp_path / "ds"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "temporary folder left behind"
    dataset = open_dataset(out)
    assert {s: len(v) for s, v in dataset.splits.items()} == {"train": 1, "val": 1, "test": 1}
    for split in ("train", "val", "test"):
        seq_dir = out / split / "CTC" / "01"
        gt = out / split / "CTC" / "01_GT"
        assert (gt / "TRA" / "man_track.txt").is_file()
        assert sorted(p.name for p in (gt / "SEG").glob("*.tif")) == [
            "man_seg000.tif",
            "man_seg005.tif",
        ]
        expected = nuclei_field(frames=7, seed=sequence_seed(1, split, 0), **SMALL_NUCLEI)
        np.testing.assert_array_equal(tifffile.imread(seq_dir / "t003.tif"), expected.images[3])
        np.testing.assert_array_equal(
            tifffile.imread(gt / "TRA" / "man_track006.tif"), expected.labels[6]
        )
        np.testing.assert_array_equal(
            tifffile.imread(gt / "SEG" / "man_seg005.tif"), expected.seg[5]
        )
        lineage = Lineage.read(gt / "TRA" / "man_track.txt")
        assert lineage.parents == expected.parents
    for seq in dataset.sequences():
        seq.validate()


def test_write_dataset_refuses_non_empty_out_unless_overwrite(tmp_path: Path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        write_dataset(out, "mother-machine", frames=3, height=96, width=24)
    assert (out / "keep.txt").read_text() == "user data"
    with pytest.raises(FileExistsError, match=r"holds other files \(keep.txt\)"):
        write_dataset(out, "mother-machine", frames=3, height=96, width=24, overwrite=True)
    assert (out / "keep.txt").read_text() == "user data"  # overwrite never deletes other data
    (out / "keep.txt").unlink()
    gt = out / "train" / "CTC" / "01_GT"  # a real dataset in the same layout, no synthetic.json
    gt.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="did not generate"):
        write_dataset(out, "mother-machine", frames=3, height=96, width=24, overwrite=True)
    assert gt.is_dir()
    shutil.rmtree(out / "train")
    write_dataset(out, "mother-machine", frames=3, height=96, width=24)
    res = out / "test" / "CTC" / "01_RES"  # a user's result saved beside its sequence
    res.mkdir()
    (res / "res_track.txt").write_text("1 0 2 0\n")
    with pytest.warns(UserWarning, match="the earlier dataset was moved to"):
        write_dataset(out, "nuclei", frames=2, height=64, width=64, overwrite=True)
    assert json.loads((out / "synthetic.json").read_text())["kind"] == "nuclei"
    assert (out / "val" / "CTC" / "01_GT" / "TRA" / "man_track.txt").is_file()
    names = sorted(p.name for p in tmp_path.iterdir())  # no temporary folder left behind
    assert names[0] == "ds" and len(names) == 2 and names[1].startswith("ds.backup-")
    kept = tmp_path / names[1]  # the earlier dataset, the user's result with it
    assert json.loads((kept / "synthetic.json").read_text())["kind"] == "mother-machine"
    assert (kept / "test" / "CTC" / "01_RES" / "res_track.txt").read_text() == "1 0 2 0\n"


def test_write_dataset_accepts_empty_out_and_leaves_nothing_on_failure(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, "mother-machine", frames=2, height=96, width=24)
    assert (empty / "test" / "CTC" / "01" / "t001.tif").is_file()
    with pytest.raises(TypeError):
        write_dataset(tmp_path / "bad", "nuclei", frames=2, no_such_option=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_held_out_splits_do_not_depend_on_train_size(tmp_path: Path):
    small = write_dataset(tmp_path / "a", "nuclei", sequences=3, frames=2, **SMALL_NUCLEI)
    large = write_dataset(
        tmp_path / "b", "nuclei", sequences=4, frames=2, splits=(2, 1, 1), **SMALL_NUCLEI
    )
    assert sorted(p.name for p in (large / "train" / "CTC").iterdir()) == [
        "01",
        "01_GT",
        "02",
        "02_GT",
    ]
    for split in ("val", "test"):
        np.testing.assert_array_equal(
            tifffile.imread(small / split / "CTC" / "01" / "t001.tif"),
            tifffile.imread(large / split / "CTC" / "01" / "t001.tif"),
        )
    assert not np.array_equal(
        tifffile.imread(large / "train" / "CTC" / "01" / "t000.tif"),
        tifffile.imread(large / "train" / "CTC" / "02" / "t000.tif"),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "spheroids"}, "kind must be one of"),
        ({"sequences": 2}, "sequences must be >= 3"),
        ({"sequences": 4, "splits": (1, 1, 1)}, "summing to"),
        ({"seed": -1}, "seed"),
        ({"seg_every": 0}, "seg_every"),
    ],
)
def test_write_dataset_rejects_bad_arguments(tmp_path: Path, kwargs, message):
    args = {"kind": "mother-machine", "frames": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        write_dataset(tmp_path / "ds", **args)
    assert not (tmp_path / "ds").exists()
