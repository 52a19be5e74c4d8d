"""The manifest's reader, writers and sample data through a real napari viewer (needs Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellsam2.ctc import CTCFormatError, LazyFrames, Lineage, open_path, write_gt
from napari_cellsam2.ctc.napari_layers import META_KEY, PARENTS_KEY
from napari_cellsam2.datasets import sample_sequence

pytestmark = pytest.mark.gui

PLUGIN = "napari-cellsam2"


def test_open_ctc_folder_gives_lazy_image_labels_and_tracks(make_napari_viewer, ctc_sequence):
    viewer = make_napari_viewer()
    viewer.open(str(ctc_sequence), plugin=PLUGIN)
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds == {
        "01": "Image",
        "01 TRA": "Labels",
        "01 SEG": "Labels",
        "01 TRA tracks": "Tracks",
    }
    image = viewer.layers["01"]
    assert isinstance(image.data, LazyFrames) and image.data.shape == (6, 40, 30)
    assert viewer.layers["01 TRA"].data.shape == viewer.layers["01 SEG"].data.shape == (6, 40, 30)
    tracks = viewer.layers["01 TRA tracks"]
    assert tracks.graph == {2: [1], 3: [1]}
    assert tracks.metadata[PARENTS_KEY] == {2: 1, 3: 1}
    assert image.metadata[META_KEY]["first_frame"] == 0
    assert viewer.dims.nsteps[0] == 6
    viewer.dims.set_current_step(0, 3)  # SEG exists on CTC frame 3: the slice shows it
    assert set(np.unique(viewer.layers["01 SEG"]._slice.image.raw)) == {0, 2, 3, 4}


def test_open_broken_ctc_folder_reports_the_file(make_napari_viewer, ctc_sequence):
    (ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt").write_text("1 0 2\n")
    viewer = make_napari_viewer()
    with pytest.raises(CTCFormatError, match=r"man_track\.txt: line 1: expected 4 columns"):
        viewer.open(str(ctc_sequence), plugin=PLUGIN)
    assert len(viewer.layers) == 0


def test_sample_has_image_labels_and_division_tracks(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "mother_machine")
    expected = sample_sequence()
    kinds = [(layer.name, type(layer).__name__) for layer in viewer.layers]
    assert kinds == [
        ("mother machine", "Image"),
        ("mother machine TRA", "Labels"),
        ("mother machine TRA tracks", "Tracks"),
    ]
    np.testing.assert_array_equal(viewer.layers["mother machine TRA"].data, expected.labels)
    assert viewer.layers["mother machine"].data.shape == expected.images.shape
    graph = viewer.layers["mother machine TRA tracks"].graph
    assert graph and graph == {d: [p] for d, p in expected.parents.items()}


def test_save_labels_and_tracks_through_the_manifest(make_napari_viewer, tmp_path, division_labels):
    viewer = make_napari_viewer()
    viewer.add_labels(division_labels, name="edited")
    layers = viewer.layers
    layers.selection = {layers["edited"]}
    assert layers.save(str(tmp_path / "01_RES"), selected=True, plugin=PLUGIN)
    assert open_path(tmp_path / "01_RES").res.lineage.parents == {}

    write_gt(tmp_path / "01_GT", division_labels, Lineage.from_labels(division_labels, {2: 1}))
    viewer.open(str(tmp_path / "01_GT"), plugin=PLUGIN)
    layers.selection = {layers["edited"], layers["01 TRA tracks"]}
    assert layers.save(str(tmp_path / "02_RES"), selected=True, plugin=PLUGIN)
    res = open_path(tmp_path / "02_RES").res
    np.testing.assert_array_equal(np.asarray(res.masks), division_labels)
    assert res.lineage.parents == {2: 1}


def test_lazy_reader_labels_take_paint_fill_and_undo(make_napari_viewer, ctc_sequence, tmp_path):
    """Hand corrections on a CTC layer need no dock and no full load: painted frames are kept
    in memory, the files stay as they were, and saving writes the edits."""
    viewer = make_napari_viewer()
    viewer.open(str(ctc_sequence), plugin="napari-cellsam2")
    tra = viewer.layers["01 TRA"]
    on_disk = np.asarray(open_path(ctc_sequence).gt.tra.masks)
    viewer.dims.set_current_step(0, 2)
    tra.mode = "paint"
    tra.brush_size = 1
    tra.paint((2, 0, 0), 9)
    label = int(on_disk[2][on_disk[2] > 0][0])
    tra.fill((2, *np.argwhere(on_disk[2] == label)[0]), 8)
    assert isinstance(tra.data, LazyFrames) and sorted(tra.data.edited) == [2]
    assert tra.data[2][0, 0] == 9
    assert (np.asarray(tra.data)[2] == 8).sum() == (on_disk[2] == label).sum()
    tra.undo()  # the fill
    assert not (np.asarray(tra.data[2]) == 8).any() and tra.data[2][0, 0] == 9
    np.testing.assert_array_equal(np.asarray(tra.data)[3:], on_disk[3:])
    np.testing.assert_array_equal(np.asarray(open_path(ctc_sequence).gt.tra.masks), on_disk)
    out = tmp_path / "01_RES"
    viewer.layers.selection = {tra}
    assert viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    saved = open_path(out).res.masks
    assert saved.frame(2)[0, 0] == 9
