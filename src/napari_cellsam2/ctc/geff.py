"""A CTC lineage as a GEFF graph (https://liveimagetrackingtools.org/geff), beside the RES.

GEFF is the exchange format of the tracking tools (motile, TrackMate, ultrack, napari plugins):
a zarr group with node and edge arrays. One node per cell per frame, with ``t`` (the CTC frame
index), the centroid ``[z,] y, x`` in pixels, ``track_id`` (the CTC label, which is also the
mask value in the RES frames) and ``lineage_id`` (the label of the track's root ancestor).
Edges go frame to frame along a track and from a mother's last node to each daughter's first,
so a division is a node with two outgoing edges, as GEFF expects.

Written with the ``geff`` package into a temporary sibling folder that is renamed into place,
like every CTC folder (:func:`napari_cellsam2.ctc.writer.atomic_folder`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lineage import Lineage
from .napari_layers import tracks_from_labels
from .writer import Existing, atomic_folder, take_back

# What an earlier GEFF (zarr v2 or v3 group) holds: only such a folder is ever replaced.
_GEFF_NAMES = {".zgroup", ".zattrs", "zarr.json", "nodes", "edges"}


def _geff_part(entry: Path) -> bool:
    return entry.name in _GEFF_NAMES


GEFF_ENTRIES = _geff_part  # the same role as writer.RES_ENTRIES


def geff_path_for(folder: str | Path) -> Path:
    """Where the GEFF of a CTC folder goes by default: ``01_RES`` -> ``01_RES.geff``."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.geff")


def lineage_graph(
    labels, lineage: Lineage, first_frame: int = 0
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """``(node_ids, node_props, edges)`` of the lineage graph of a (T, [Z,] Y, X) label stack.

    ``labels`` may be lazy (each frame is read once). Node ids are 0..N-1 in (label, time)
    order; ``edges`` is (E, 2) source -> target.
    """
    data, _ = tracks_from_labels(labels)
    ndim = data.shape[1] - 2
    track_ids = data[:, 0].astype(np.int64)
    node_ids = np.arange(len(data), dtype=np.uint64)
    same_track = track_ids[1:] == track_ids[:-1]
    along = np.column_stack([node_ids[:-1][same_track], node_ids[1:][same_track]])
    first = {int(t): int(i) for i, t in reversed(list(enumerate(track_ids)))}
    last = {int(t): int(i) for i, t in enumerate(track_ids)}
    links = [
        (last[p], first[d]) for d, p in sorted(lineage.parents.items()) if p in last and d in first
    ]
    edges = np.concatenate([along, np.asarray(links, np.uint64).reshape(-1, 2)]).astype(np.uint64)

    def root(label: int) -> int:
        while label in lineage.parents:
            label = lineage.parents[label]
        return label

    props = {"t": data[:, 1].astype(np.int64) + first_frame, "track_id": track_ids}
    props["lineage_id"] = np.array([root(int(t)) for t in track_ids], np.int64)
    for axis, column in zip("zyx"[3 - ndim :], data[:, 2:].T, strict=True):
        props[axis] = column
    return node_ids, props, edges


def write_geff(
    path: str | Path,
    labels,
    lineage: Lineage,
    first_frame: int = 0,
    *,
    existing: Existing = "refuse",
) -> Path:
    """Write the lineage of ``labels`` (as validated for CTC) as a GEFF zarr group at ``path``.

    An earlier GEFF at ``path`` is handled as ``existing`` says (refused by default, see
    :data:`~napari_cellsam2.ctc.writer.Existing`); a folder holding anything else is refused.
    """
    import geff
    from geff.core_io import write_arrays
    from geff_spec import Axis, GeffMetadata

    node_ids, props, edges = lineage_graph(labels, lineage, first_frame)
    spatial = [name for name in "zyx" if name in props]
    metadata = GeffMetadata(
        geff_version=geff.__version__,
        directed=True,
        axes=[Axis(name="t", type="time")] + [Axis(name=a, type="space") for a in spatial],
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"lineage": "lineage_id"},
    )
    with atomic_folder(path, GEFF_ENTRIES, existing) as tmp:
        write_arrays(
            tmp,
            node_ids=node_ids,
            node_props={k: {"values": v, "missing": None} for k, v in props.items()},
            edge_ids=edges,
            edge_props={},
            metadata=metadata,
            overwrite=True,  # geff takes the fresh, empty temporary folder for an earlier geff
        )
    return Path(path)


def write_geff_with(
    res: str | Path,
    res_existing: Existing,
    path: str | Path,
    labels,
    lineage: Lineage,
    first_frame: int = 0,
    *,
    existing: Existing = "refuse",
) -> Path:
    """:func:`write_geff` for a result just written to ``res`` (with ``res_existing``): when
    the GEFF fails, ``res`` is taken back (:func:`~napari_cellsam2.ctc.writer.take_back`), so
    the two outputs are written together or not at all."""
    try:
        return write_geff(path, labels, lineage, first_frame, existing=existing)
    except BaseException:
        take_back(res, res_existing)
        raise
