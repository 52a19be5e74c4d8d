"""Which division links go with a labels layer when it carries none itself."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellsam2.ctc.napari_layers import PARENTS_KEY, layer_meta
from napari_cellsam2.widgets.layer_lineage import layer_lineage_inputs

pytestmark = pytest.mark.gui

TRACKS = np.array([[1, 0, 5, 5], [2, 1, 5, 4], [3, 1, 5, 6]], float)


def _labels(viewer, **meta):
    data = np.zeros((2, 10, 10), np.uint16)
    return viewer.add_labels(data, name="mine", metadata=layer_meta("res", **meta) if meta else {})


def test_links_on_the_layer_win(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = _labels(viewer)
    labels.metadata[PARENTS_KEY] = {7: 6}
    viewer.add_tracks(TRACKS, graph={2: [1], 3: [1]})
    assert layer_lineage_inputs(viewer, labels)[1] == {7: 6}


def test_a_layer_made_here_without_divisions_takes_none_from_tracks(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = _labels(viewer)
    labels.metadata[PARENTS_KEY] = {}  # e.g. the dock's tracking layer before any division
    viewer.add_tracks(TRACKS, graph={2: [1], 3: [1]}, name="ground truth tracks")
    assert layer_lineage_inputs(viewer, labels)[1] == {}


def test_the_only_tracks_layer_with_divisions_is_used(make_napari_viewer):
    viewer = make_napari_viewer()
    labels = _labels(viewer)
    viewer.add_tracks(TRACKS[:1], name="no divisions")
    viewer.add_tracks(TRACKS, graph={2: [1], 3: [1]})
    assert layer_lineage_inputs(viewer, labels)[1] == {2: 1, 3: 1}


def test_several_candidates_are_not_guessed_unless_one_is_the_same_sequence(
    make_napari_viewer,
):
    viewer = make_napari_viewer()
    labels = _labels(viewer, sequence="01", folder="/data/01")
    viewer.add_tracks(TRACKS, graph={2: [1]}, name="other movie")
    viewer.add_tracks(TRACKS, graph={3: [1]}, name="also other")
    assert layer_lineage_inputs(viewer, labels)[1] == {}  # ambiguous: a warning, no links
    same = layer_meta("tracks", of="res", sequence="01", folder="/data/01")
    viewer.add_tracks(TRACKS, graph={2: [1], 3: [1]}, name="this movie", metadata=same)
    assert layer_lineage_inputs(viewer, labels)[1] == {2: 1, 3: 1}
