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
