"""The napari RES writers as plain functions: round trips through the CTC reader, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cellsam2._reader import read_ctc
from napari_cellsam2._writer import write_labels, write_labels_tracks
from napari_cellsam2.ctc import CTCFormatError, Lineage, open_path, read_res
from napari_cellsam2.ctc.napari_layers import META_KEY, PARENTS_KEY, tracks_from_labels

PARENTS = {2: 1, 3: 1}


def labels_meta(parents=None, first_frame=None) -> dict:
    metadata = {}
    if parents is not None:
        metadata[PARENTS_KEY] = parents
    if first_frame is not None:
        metadata[META_KEY] = {"kind": "tra", "first_frame": first_frame}
    return {"name": "labels", "metadata": metadata}


def test_labels_with_parent_metadata_round_trip(tmp_path: Path, division_labels):
    out = tmp_path / "01_RES"
    written = write_labels(str(out), division_labels, labels_meta(PARENTS))
    assert written == [str(out)]
    res = open_path(out).res
    np.testing.assert_array_equal(np.asarray(res.masks), division_labels)
    assert res.lineage.parents == PARENTS
    assert (res.lineage[1].begin, res.lineage[1].end, res.lineage[4].end) == (0, 2, 5)


def test_first_frame_from_metadata_keeps_ctc_numbering(tmp_path: Path, division_labels):
    write_labels(str(tmp_path / "01_RES"), division_labels, labels_meta(PARENTS, first_frame=7))
    res = read_res(tmp_path / "01_RES")
    assert res.masks.indices == tuple(range(7, 13))
    assert (res.lineage[2].begin, res.lineage[2].parent) == (10, 1)


def test_labels_without_links_get_no_parents(tmp_path: Path, division_labels):
    write_labels(str(tmp_path / "01_RES"), division_labels, {"metadata": {}})
    lineage = read_res(tmp_path / "01_RES").lineage
    assert lineage.parents == {} and sorted(lineage.tracks) == [1, 2, 3, 4]


def test_tracks_graph_gives_the_links(tmp_path: Path, division_labels):
    data, graph = tracks_from_labels(division_labels, PARENTS)
    layer_data = [
        (division_labels, labels_meta({3: 1}), "labels"),  # graph wins over metadata
        (data, {"name": "tracks", "graph": graph, "metadata": {}}, "tracks"),
    ]
    write_labels_tracks(str(tmp_path / "01_RES"), layer_data)
    assert read_res(tmp_path / "01_RES").lineage.parents == PARENTS


def test_links_to_deleted_labels_are_dropped(tmp_path: Path, division_labels):
    edited = np.where(division_labels == 3, 0, division_labels)
    write_labels(str(tmp_path / "01_RES"), edited, labels_meta({2: 1, 3: 1}))
    assert read_res(tmp_path / "01_RES").lineage.parents == {2: 1}


def test_reader_layer_written_back_equals_ground_truth(ctc_sequence: Path, division_labels):
    layers = {k["name"]: (d, k) for d, k, _ in read_ctc(str(ctc_sequence))}
    data, kwargs = layers["01 TRA"]
    write_labels(str(ctc_sequence.parent / "01_RES"), data, kwargs)
    seq = open_path(ctc_sequence.parent / "01_RES")
    np.testing.assert_array_equal(np.asarray(seq.res.masks), division_labels)
    assert seq.res.lineage.tracks == seq.gt.tra.lineage.tracks


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_float_labels_give_clear_error_and_no_folder(tmp_path: Path, division_labels):
    out = tmp_path / "01_RES"
    with pytest.raises(CTCFormatError, match=r"01_RES: labels must be integers, got dtype float"):
        write_labels(str(out), division_labels.astype(np.float32), labels_meta())
    assert leftovers(tmp_path) == []


def test_impossible_link_is_dropped_and_gaps_are_split(tmp_path: Path, division_labels):
    """The napari writer repairs hand-edited layers exactly as the dock's export does."""
    write_labels(str(tmp_path / "a_RES"), division_labels, labels_meta({2: 4}))  # 4 spans all
    assert Lineage.read(tmp_path / "a_RES" / "res_track.txt")[2].parent == 0
    painted = division_labels.copy()
    painted[2][painted[2] == 4] = 0  # cell 4 erased on one frame
    write_labels(str(tmp_path / "b_RES"), painted, labels_meta({}))
    lineage = Lineage.read(tmp_path / "b_RES" / "res_track.txt")
    assert lineage[4].end == 1 and [t.parent for t in lineage if t.label > 4] == [4]


def test_single_frame_labels_are_refused(tmp_path: Path, division_labels):
    with pytest.raises(CTCFormatError, match=r"labels must be \(T,Y,X\)"):
        write_labels(str(tmp_path / "01_RES"), division_labels[0], labels_meta())
    assert leftovers(tmp_path) == []


def test_labels_beyond_what_ctc_masks_hold_are_refused_not_wrapped(tmp_path: Path, division_labels):
    """napari keeps int64 labels; 2**32 + 1 cast to uint32 became label 1 and merged with it."""
    labels = division_labels.astype(np.int64)
    labels[labels == 4] = 2**32 + 1
    with pytest.raises(CTCFormatError, match="labels go up to 4294967297"):
        write_labels(str(tmp_path / "01_RES"), labels, labels_meta(PARENTS))
    assert not (tmp_path / "01_RES").exists()
