"""The lineage of a tracking session as a napari Tracks layer, computed off the GUI thread."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels, Tracks

from ..ctc.napari_layers import PARENTS_KEY, layer_meta, tracks_from_labels
from .state import DockState

TRACKS_NAME = "cellsam2 lineage"


class LineageView:
    """Keeps the labels layer's parent links and the ``cellsam2 lineage`` Tracks layer current."""

    def __init__(self, state: DockState) -> None:
        self.state = state

    def update(self, session, labels_layer: Labels) -> None:
        """Parent links into the layer's metadata (earlier sessions' links are kept) and the
        Tracks layer. The session's links, the centroids (one read of every frame) and a new
        Tracks layer's model are computed in the ordered worker (the session may be changing
        in it: the main thread never reads it), and the dock stays busy until they are shown."""
        parents = dict(labels_layer.metadata.get(PARENTS_KEY) or {})
        meta = layer_meta("tracks", of="res")
        exists = TRACKS_NAME in self.state.viewer.layers

        def compute():
            for i in session.object_ids:  # the session's own links win; 0 = no longer linked
                parents.pop(i, None)
                if session.parent(i):
                    parents[i] = session.parent(i)
            meta[PARENTS_KEY] = parents
            data, graph = tracks_from_labels(session.labels, parents)
            if exists or not len(data):
                return data, graph, None
            # the layer model is built here: a first Tracks layer costs ~0.1-0.9 s (napari
            # initialises its tracks machinery), which the GUI thread must not pay
            return data, graph, Tracks(data, graph=graph, name=TRACKS_NAME, metadata=meta)

        def show(out) -> None:
            labels_layer.metadata[PARENTS_KEY] = parents
            self._show(*out, meta)

        self.state.run_job(compute, on_return=show, ordered=True)

    def _show(self, data: np.ndarray, graph: dict, new: Tracks | None, meta: dict) -> None:
        """Add the new layer or update the existing one in place: removing a layer makes napari
        run a full garbage collection on the GUI thread (about half a second in a busy viewer)."""
        viewer = self.state.viewer
        layer = viewer.layers[TRACKS_NAME] if TRACKS_NAME in viewer.layers else None  # noqa: SIM401
        if not len(data):
            if layer is not None:
                viewer.layers.remove(layer)
            return
        if layer is None:
            if new is None:  # the user removed the layer meanwhile
                new = Tracks(data, graph=graph, name=TRACKS_NAME, metadata=meta)
            viewer.add_layer(new)
            return
        layer.graph = {}  # the old graph may name tracks the new data no longer has
        layer.data = data
        layer.graph = graph
        layer.metadata = meta
