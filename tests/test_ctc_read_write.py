"""Reading CTC folders lazily by file-name indices, and writing them back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import (
    LazyFrames,
    Lineage,
    open_dataset,
    open_path,
    write_gt,
    write_images,
    write_res,
)
from napari_cellsam2.ctc import frames as frames_mod


def test_open_sequence_with_gt_and_seg(ctc_sequence, division_labels):
    seq = open_path(ctc_sequence)
    seq.validate()
    assert isinstance(seq.images, LazyFrames)
    assert seq.images.shape == division_labels.shape
    np.testing.assert_array_equal(np.asarray(seq.gt.tra.masks), division_labels)
    assert seq.gt.tra.lineage.divisions == {1: [2, 3]}
    assert seq.gt.seg.indices == (0, 3)
    seg = seq.seg_placed()
    assert seg.shape == division_labels.shape
    np.testing.assert_array_equal(seg[3], division_labels[3])
    assert not seg[1].any()


@pytest.mark.parametrize("entry", ["01", "01_GT", "01_GT/TRA"])
def test_any_folder_of_the_sequence_opens_it(ctc_sequence, entry):
    seq = open_path(ctc_sequence.parent / entry)
    assert seq.name == "01" and seq.images is not None and seq.gt.tra is not None


def test_indices_come_from_names_not_positions(tmp_path, division_labels):
    lin = Lineage.from_labels(division_labels, {2: 1, 3: 1}, first_frame=998)
    write_images(tmp_path / "01", division_labels * 10, first_frame=998)
    write_gt(tmp_path / "01_GT", division_labels, lin, first_frame=998)
    names = sorted(p.name for p in (tmp_path / "01").iterdir())
    assert names[0] == "t0998.tif" and names[-1] == "t1003.tif"
    seq = open_path(tmp_path / "01")
    seq.validate()
    assert seq.images.indices == tuple(range(998, 1004))
    assert seq.first_frame == 998
    assert seq.gt.tra.lineage[1].begin == 998


def test_three_digit_names_below_frame_1000(tmp_path, division_labels):
    write_res(tmp_path / "01_RES", division_labels, Lineage.from_labels(division_labels))
    assert (tmp_path / "01_RES" / "mask000.tif").exists()
    assert (tmp_path / "01_RES" / "res_track.txt").exists()


def test_opening_is_lazy(ctc_sequence, monkeypatch):
    reads = []
    real = frames_mod.read_tiff
    monkeypatch.setattr(frames_mod, "read_tiff", lambda p: reads.append(p) or real(p))
    seq = open_path(ctc_sequence)
    assert reads == []  # only headers were parsed
    seq.images[4]
    assert reads == [ctc_sequence / "t004.tif"]
    seq.images[4]
    assert len(reads) == 1  # cached


def test_lazy_indexing_matches_numpy(ctc_sequence):
    frames = open_path(ctc_sequence).images
    full = np.asarray(frames)
    np.testing.assert_array_equal(frames[1:4, 2:5], full[1:4, 2:5])
    np.testing.assert_array_equal(frames[-1], full[-1])
    np.testing.assert_array_equal(frames[[0, 2]], full[[0, 2]])


def test_dataset_root_with_splits(tmp_path, division_labels):
    lin = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    for split, names in {"train": ["01", "02"], "val": ["01"], "test": ["01"]}.items():
        for name in names:
            base = tmp_path / split / "CTC"
            write_images(base / name, division_labels)
            write_gt(base / f"{name}_GT", division_labels, lin)
    ds = open_dataset(tmp_path)
    assert {k: [s.name for s in v] for k, v in ds.splits.items()} == {
        "train": ["01", "02"],
        "val": ["01"],
        "test": ["01"],
    }


def test_3d_time_lapse_opens_for_viewing(tmp_path):
    vol = np.zeros((3, 4, 10, 12), np.uint16)
    vol[:, 1:3, 2:5, 2:5] = 1
    write_images(tmp_path / "01", vol)
    write_gt(tmp_path / "01_GT", vol, Lineage.from_labels(vol))
    seq = open_path(tmp_path / "01")
    seq.validate()
    assert seq.images.shape == (3, 4, 10, 12)


def test_gt_round_trip_and_cli_info(ctc_sequence, capsys):
    assert main(["info", str(ctc_sequence)]) == 0
    out = capsys.readouterr().out
    assert "frames     6" in out and "4 tracks, 1 divisions" in out and "valid      yes" in out


def test_corrected_labels_become_training_data(tmp_path, division_labels):
    """A result written in GT/TRA format reads back as ground truth."""
    lin = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    write_gt(tmp_path / "01_GT", division_labels, lin, seg_frames=[0, 5])
    seq = open_path(tmp_path / "01_GT")
    assert seq.images is None
    assert seq.gt.tra.lineage.to_text() == lin.to_text()
    assert tifffile.imread(tmp_path / "01_GT" / "SEG" / "man_seg005.tif").max() == 4


def test_lazy_frames_take_assignments_like_numpy_and_keep_files(ctc_sequence):
    """napari paints into lazy CTC labels: numpy semantics, copy-on-write per frame."""
    from napari_cellsam2.ctc import open_path

    lazy = open_path(ctc_sequence).gt.tra.masks
    original = np.array(lazy)
    reference = original.copy()
    last = len(original) - 1
    edits = [
        ((1, slice(0, 2), slice(0, 3)), 7),
        ((slice(2, 4), 0, 0), 5),
        ((np.array([0, 0, 3]), np.array([1, 2, 3]), np.array([4, 4, 4])), np.array([9, 8, 6])),
        ((-1, 1), 3),
        ((np.array([-1, last]), np.array([2, 3]), np.array([0, 0])), 4),
        ((np.arange(len(original)) == 2, 5, 5), 2),
    ]
    for key, value in edits:
        np.testing.assert_array_equal(lazy[key], reference[key])  # napari reads before it paints
        lazy[key] = value
        reference[key] = value
        np.testing.assert_array_equal(np.asarray(lazy), reference)
    assert sorted(lazy.edited) == sorted({0, 1, 2, 3, last})
    np.testing.assert_array_equal(lazy[1:3], reference[1:3])
    assert lazy.frame(1)[0, 0] == 7  # the tracker and the writers read the edits too
    np.testing.assert_array_equal(np.asarray(open_path(ctc_sequence).gt.tra.masks), original)


def test_napari_paints_into_a_lazy_ctc_labels_layer(ctc_sequence):
    """Labels.data_setitem (the paint and fill tools) reads the painted points first, with one
    index array per axis: the lazy frames answered (N, N) and painting raised IndexError."""
    from napari.layers import Labels

    from napari_cellsam2.ctc import open_path

    layer = Labels(open_path(ctc_sequence).gt.tra.masks)
    points = (np.array([2, 2, 3]), np.array([6, 7, 8]), np.array([5, 5, 5]))
    layer.data_setitem(points, 9)
    assert (np.asarray(layer.data)[points] == 9).all()
    layer.undo()
    assert not (np.asarray(layer.data)[points] == 9).any()


def test_atomic_write_text_replaces_whole_files_with_shared_permissions(tmp_path):
    import os

    from napari_cellsam2.ctc.writer import atomic_write_text

    path = atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    atomic_write_text(path, "a: 2\n")
    assert path.read_text() == "a: 2\n" and [p.name for p in tmp_path.iterdir()] == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
