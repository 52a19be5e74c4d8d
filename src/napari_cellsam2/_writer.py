"""napari writers: a labels layer (optionally with its tracks) as a CTC result (RES) folder.

Parent links come from, in order: a tracks layer's ``graph`` (multi-layer writer), the labels
layer's ``metadata["cellsam2_parents"]`` (set by our reader, sample and tracker), or none. The CTC
first frame comes from ``metadata["cellsam2"]["first_frame"]`` (0 if absent). Writing goes
through :func:`export_labels` (gaps split, impossible links dropped, as the dock export does):
validated first, atomic, so a bad layer leaves no folder behind. An empty layer is refused, and
an earlier result at ``path`` is kept in a dated backup beside it (a :class:`CTCWarning` says
where), since napari's save dialog may not ask before replacing a folder.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .ctc.errors import CTCWarning
from .ctc.napari_layers import links_from_metadata, parents_from_graph
from .ctc.repair import export_labels
from .ctc.writer import as_label_stack, backup_path

FullLayerData = tuple[Any, dict[str, Any], str]


def write_res_layer(
    path: str | Path, data, metadata: Mapping[str, Any] | None, parents=None
) -> Path:
    """Write labels ``data`` (with layer ``metadata``) to the RES folder ``path``; an earlier
    result there is moved to a dated backup first (never lost)."""
    labels = as_label_stack(data, path)  # a clear error naming the folder for bad data
    stored, first_frame = links_from_metadata(metadata)
    parents = stored if parents is None else parents
    backup = backup_path(path)
    export_labels(path, labels, parents, first_frame, existing=backup)  # as the dock's export
    if backup.exists():
        warnings.warn(f"{path}: the earlier result was moved to {backup}", CTCWarning, stacklevel=2)
    return Path(path)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari single-layer writer: one labels layer -> ``path`` as a RES folder.

    Returns ``[path]``, the folder holding ``mask###.tif`` and ``res_track.txt``.
    """
    return [str(write_res_layer(path, data, meta.get("metadata")))]


def write_labels_tracks(path: str, layer_data: list[FullLayerData]) -> list[str]:
    """napari multi-layer writer: labels + tracks -> RES folder, links from the tracks graph.

    Track ids must equal label values (as in layers made by this plugin).
    """
    by_type = {layer_type: (data, meta) for data, meta, layer_type in layer_data}
    labels, labels_meta = by_type["labels"]
    _, tracks_meta = by_type["tracks"]
    parents = parents_from_graph(tracks_meta.get("graph"))
    return [str(write_res_layer(path, labels, labels_meta.get("metadata"), parents))]
