"""A CTC folder this project did not write: Fluo-N2DH-SIM+ 01 TRA, frames 0-11 (see
tests/fixtures/fluo_n2dh_sim/README.md). Every other fixture comes from our own writer, so a
misreading shared by our reader and writer would pass them all."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile

from napari_cellsam2._reader import napari_get_reader
from napari_cellsam2.ctc import Lineage, open_path, write_gt
from napari_cellsam2.ctc.geff import lineage_graph

REAL = Path(__file__).parent / "fixtures" / "fluo_n2dh_sim" / "01_GT"
DIVISIONS = {11: [31, 32], 18: [33, 34], 24: [35, 36]}  # from the challenge's man_track.txt


def test_real_gt_reads_and_validates_with_its_lineage():
    seq = open_path(REAL)
    seq.validate()  # every mask read, man_track.txt checked against them
    tra = seq.gt.tra
    assert seq.images is None and tra.masks.indices == tuple(range(12))
    assert tra.masks.frame_shape == (690, 628) and tra.masks.dtype == np.uint16
    assert len(tra.lineage) == 36 and tra.lineage.divisions == DIVISIONS
    assert (tra.lineage[11].begin, tra.lineage[11].end) == (0, 9)
    assert set(np.unique(tra.masks.frame(11))) - {0} == {
        t.label for t in tra.lineage if t.end == 11
    }


def test_real_gt_opens_in_napari_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CTCWarning would fail here
        layers = napari_get_reader(str(REAL))(str(REAL))
    by_name = {kwargs["name"]: (data, kwargs) for data, kwargs, _ in layers}
    assert set(by_name) == {"01 TRA", "01 TRA tracks"}
    graph = by_name["01 TRA tracks"][1]["graph"]
    assert {p[0] for p in graph.values()} == set(DIVISIONS)


def test_real_gt_round_trips_through_our_writer(tmp_path):
    tra = open_path(REAL).gt.tra
    labels = np.asarray(tra.masks)
    out = write_gt(tmp_path / "01_GT", labels, tra.lineage, seg_frames=[0, 11])
    for src in sorted((REAL / "TRA").glob("*.tif")):
        np.testing.assert_array_equal(tifffile.imread(out / "TRA" / src.name), tifffile.imread(src))
    again = Lineage.read(out / "TRA" / "man_track.txt")
    assert again.tracks == tra.lineage.tracks
    reopened = open_path(out)
    reopened.validate()
    assert reopened.gt.seg.indices == (0, 11)


def test_real_gt_lineage_as_a_geff_graph():
    tra = open_path(REAL).gt.tra
    node_ids, props, edges = lineage_graph(tra.masks, tra.lineage)
    assert len(node_ids) == sum(t.end - t.begin + 1 for t in tra.lineage)
    out_degree = np.bincount(edges[:, 0].astype(np.int64), minlength=len(node_ids))
    mothers = {int(props["track_id"][n]) for n in np.flatnonzero(out_degree == 2)}
    assert mothers == set(DIVISIONS)
