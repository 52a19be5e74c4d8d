"""napari layer-data tuples from CTC data, without importing napari or Qt.

The reader, the sample data and the widgets all build their layers here, so layer names and
metadata follow one convention:

* time axis: 0-based positions; CTC frame index = ``metadata["cellsam2"]["first_frame"]`` +
  position. Every layer of a sequence spans the same range (the union of images, TRA and RES);
  parts that cover fewer frames (SEG, a partial RES) are placed on it with zeros elsewhere.
* names: ``"<prefix>"`` image, ``"<prefix> TRA"`` / ``"<prefix> SEG"`` / ``"<prefix> RES"``
  labels, ``"<prefix> TRA tracks"`` / ``"<prefix> RES tracks"`` tracks; ``prefix`` is the
  sequence name (``"01"``), or ``"<split>/<name>"`` inside a dataset root with splits.
* ``metadata["cellsam2"]``: ``kind`` (``image``, ``tra``, ``seg``, ``res``, ``tracks``), ``of``
  (tracks only: ``tra`` or ``res``), ``sequence``, ``split``, ``folder`` (the sequence folder, ""
  when not from disk), ``first_frame``.
* ``metadata["cellsam2_parents"]`` on TRA/RES labels and tracks layers: ``{daughter: parent}``.
  The RES writer reads it back, so links survive a read-edit-write cycle.
* tracks data rows are ``(track_id, t, [z,] y, x)`` centroids with ``track_id`` = label value,
  and ``graph`` = ``{daughter: [parent]}``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CTCFormatError, CTCWarning
from .frames import LazyFrames, PlacedFrames
from .sequence import (
    CTCSequence,
    TrackedMasks,
    find_sequence_folders,
    has_entry,
    looks_like_sequence,
    open_sequence,
)

LayerData = tuple[Any, dict[str, Any], str]

META_KEY = "cellsam2"
PARENTS_KEY = "cellsam2_parents"

_SEQ = re.compile(r"^\d{2,}$")
_GT = re.compile(r"^\d{2,}_GT$")
_RES = re.compile(r"^\d{2,}_RES$")
_RES_FILE = re.compile(r"^mask\d{3,4}\.tiff?$")
# Largest label for which per-frame centroids use a direct np.bincount (memory ~ 8 B per value).
_DIRECT_BINCOUNT_MAX = 1 << 22


# ---- cheap detection -------------------------------------------------------------------------
def ctc_kind(path: str | Path) -> str | None:
    """What CTC folder ``path`` is, judged from names only (no pixel or header reads).

    Returns ``"sequence"`` (``01``), ``"gt"`` (``01_GT``), ``"gt_part"`` (``01_GT/TRA`` or
    ``SEG``), ``"res"`` (``01_RES``), ``"dataset"`` (a root with splits or ``01``, ``02`` …) or
    None for anything else. A folder that passes may still be broken: opening it then raises
    :class:`CTCFormatError` with the reason.
    """
    path = Path(path)
    if not path.is_dir():
        return None
    name = path.name
    if _SEQ.match(name):
        return "sequence" if looks_like_sequence(path) else None
    if _GT.match(name):
        return "gt" if (path / "TRA").is_dir() or (path / "SEG").is_dir() else None
    if name in ("TRA", "SEG") and _GT.match(path.parent.name):
        return "gt_part"
    if _RES.match(name):
        has_res = (path / "res_track.txt").is_file() or has_entry(path, _RES_FILE)
        return "res" if has_res else None
    try:
        with warnings.catch_warnings():  # a probe: opening the folder warns, once
            warnings.simplefilter("ignore", CTCWarning)
            found = find_sequence_folders(path)
    except CTCFormatError:
        return None
    if any(looks_like_sequence(p) for ps in found.values() for p in ps):
        return "dataset"
    return None


def why_not_ctc(path: str | Path) -> str:
    """Why :func:`ctc_kind` turns ``path`` down, in words a user can act on (names only)."""
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is a file; open the CTC folder that holds it"
    entries = sorted(e.name for e in path.iterdir())
    if not entries:
        return "is an empty folder"
    tiffs = [name for name in entries if re.search(r"\.tiff?$", name, re.IGNORECASE)]
    name = path.name
    if _SEQ.match(name):
        if tiffs:
            return (
                f"holds {len(tiffs)} TIFF file(s) but none named like CTC frames (t000.tif, "
                f"t001.tif …; e.g. {tiffs[0]!r}), and has no {name}_GT or {name}_RES beside it"
            )
        return f"holds no t000.tif … frames and has no {name}_GT or {name}_RES beside it"
    if _GT.match(name):
        return "is a ground-truth folder without TRA/ or SEG/"
    if _RES.match(name):
        return "is a result folder without mask000.tif … or res_track.txt"
    if tiffs:
        return (
            f"holds {len(tiffs)} TIFF file(s) (e.g. {tiffs[0]!r}) but is not a CTC folder: CTC "
            "frames are t000.tif … in a sequence folder named 01, 02 …"
        )
    try:
        found = find_sequence_folders(path)
    except CTCFormatError:
        return (
            "is not a CTC sequence (01 with t000.tif …), 01_GT, 01_RES or a dataset root "
            "holding 01, 02 … (or train/val/test splits of them)"
        )
    names = ", ".join(str(p.relative_to(path)) for ps in found.values() for p in ps[:3])
    return f"is a dataset root, but none of its sequence folders ({names}) holds image frames"


# ---- frame range and placement ---------------------------------------------------------------
def frame_range(seq: CTCSequence) -> tuple[int, int]:
    """``(first CTC index, count)`` covering images, TRA and RES of ``seq``."""
    parts = [seq.images, seq.gt.tra.masks if seq.gt and seq.gt.tra else None]
    parts.append(seq.res.masks if seq.res else None)
    indices = [idx for p in parts if p is not None for idx in (p.indices[0], p.indices[-1])]
    if not indices and seq.gt and seq.gt.seg is not None:
        indices = [seq.gt.seg.indices[0], seq.gt.seg.indices[-1]]
    if not indices:
        raise CTCFormatError(seq.folder, "sequence has no frames")
    return min(indices), max(indices) - min(indices) + 1


def on_range(frames: LazyFrames, first: int, count: int) -> LazyFrames | PlacedFrames:
    """``frames`` as is when it spans exactly ``first..first+count-1``, else placed with zeros."""
    if frames.indices == tuple(range(first, first + count)):
        return frames
    return PlacedFrames(frames, first, count)


def sampled_contrast_limits(frames, samples: int = 5) -> tuple[float, float]:
    """Min/max over a few evenly spaced frames, so napari never scans a lazy stack."""
    n = len(frames)
    if n == 0:
        return 0.0, 1.0
    positions = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
    sampled = [np.asarray(frames[int(p)]) for p in positions]
    lo = min(float(f.min()) for f in sampled)
    hi = max(float(f.max()) for f in sampled)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


# ---- tracks from labels ----------------------------------------------------------------------
def _frame_centroids(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels present in one frame and their centroids (K, ndim).

    One pass of np.bincount per axis over the foreground pixels only: no per-label loop, and
    sparse frames (cells on background) cost a fraction of the frame size.
    """
    flat = frame.ravel()
    foreground = np.flatnonzero(flat)
    if not foreground.size:
        return np.zeros(0, np.int64), np.zeros((0, frame.ndim))
    values = flat[foreground]
    if int(values.max()) <= _DIRECT_BINCOUNT_MAX:
        index = values.astype(np.intp, copy=False)
        counts = np.bincount(index)
        ids = np.arange(len(counts))
    else:  # huge label values: compact them first
        ids, index = np.unique(values, return_inverse=True)
        counts = np.bincount(index)
    keep = counts > 0
    coords, rest = [], foreground
    for size in reversed(frame.shape[1:]):  # np.divmod: ~10x faster than np.unravel_index
        rest, coord = np.divmod(rest, size)
        coords.insert(0, coord)
    coords.insert(0, rest)
    centroids = np.stack(
        [np.bincount(index, weights=c, minlength=len(counts))[keep] for c in coords], axis=1
    )
    return ids[keep].astype(np.int64), centroids / counts[keep, None]


def tracks_from_labels(
    labels, parents: Mapping[int, int] | None = None
) -> tuple[np.ndarray, dict[int, list[int]]]:
    """napari tracks ``(data, graph)`` from a (T, [Z,] Y, X) label stack, reading each frame once.

    ``data`` rows are ``(label, t, [z,] y, x)`` with ``t`` the 0-based position, sorted by label
    then time; ``graph`` maps daughter -> [parent] for links whose labels both appear.
    """
    rows = []
    for t in range(len(labels)):
        frame = np.asarray(labels[t])
        ids, centroids = _frame_centroids(frame)
        if len(ids):
            rows.append(np.column_stack([ids, np.full(len(ids), t), centroids]))
    ndim = len(labels.shape) - 1
    if not rows:
        return np.zeros((0, ndim + 2)), {}
    data = np.concatenate(rows).astype(np.float64)
    data = data[np.lexsort((data[:, 1], data[:, 0]))]
    present = set(np.unique(data[:, 0]).astype(int).tolist())
    graph = {
        int(d): [int(p)]
        for d, p in sorted((parents or {}).items())
        if int(d) in present and int(p) in present
    }
    return data, graph


# ---- layer tuples ----------------------------------------------------------------------------
def layer_meta(kind: str, **fields: Any) -> dict[str, Any]:
    """The ``metadata`` dict of a CellSAM2 layer (see the module docstring)."""
    base = {"kind": kind, "sequence": "", "split": "", "folder": "", "first_frame": 0}
    base.update(fields)
    return {META_KEY: base}


def image_layer(data, name: str, meta: dict[str, Any], *, visible: bool = True) -> LayerData:
    kwargs = {
        "name": name,
        "contrast_limits": sampled_contrast_limits(data),
        "metadata": layer_meta("image", **meta),
        "visible": visible,
    }
    return data, kwargs, "image"


def labels_layer(
    data,
    name: str,
    kind: str,
    meta: dict[str, Any],
    *,
    parents: Mapping[int, int] | None = None,
    visible: bool = True,
) -> LayerData:
    metadata = layer_meta(kind, **meta)
    if parents is not None:
        metadata[PARENTS_KEY] = {int(d): int(p) for d, p in parents.items()}
    return data, {"name": name, "metadata": metadata, "visible": visible}, "labels"


def tracks_layer(
    labels,
    name: str,
    of: str,
    meta: dict[str, Any],
    *,
    parents: Mapping[int, int] | None = None,
    visible: bool = True,
) -> LayerData | None:
    """Tracks of ``labels`` (reads every frame); None when no label is present anywhere."""
    data, graph = tracks_from_labels(labels, parents)
    if not len(data):
        return None
    metadata = layer_meta("tracks", of=of, **meta)
    metadata[PARENTS_KEY] = {d: ps[0] for d, ps in graph.items()}
    kwargs = {"name": name, "graph": graph, "metadata": metadata, "visible": visible}
    return data, kwargs, "tracks"


def layers_from_sequence(
    seq: CTCSequence,
    prefix: str | None = None,
    *,
    split: str = "",
    tracks: bool = True,
    visible: bool = True,
) -> list[LayerData]:
    """Image, TRA, SEG and RES labels, then TRA/RES tracks of one sequence, in that order.

    Image and label layers stay lazy (:class:`LazyFrames`/:class:`PlacedFrames`; painting keeps
    edited frames in memory and never touches the files). Tracks read every TRA/RES frame once;
    pass ``tracks=False`` to skip that.
    """
    prefix = prefix or seq.name
    first, count = frame_range(seq)
    meta = {"sequence": seq.name, "split": split, "folder": str(seq.folder), "first_frame": first}
    out: list[LayerData] = []
    if seq.images is not None:
        out.append(image_layer(on_range(seq.images, first, count), prefix, meta, visible=visible))
    parts = (
        ("tra", seq.gt.tra if seq.gt else None),
        ("seg", seq.gt.seg if seq.gt else None),
        ("res", seq.res),
    )
    tracked = []
    for kind, part in parts:
        if part is None:
            continue
        masks = part if kind == "seg" else part.masks
        _warn_shape(seq, masks)
        if kind == "seg":
            data, parents = PlacedFrames(part, first, count), None
        else:
            data, parents = on_range(part.masks, first, count), part.lineage.parents
            tracked.append((kind, data, part))
        name = f"{prefix} {kind.upper()}"
        out.append(labels_layer(data, name, kind, meta, parents=parents, visible=visible))
    for kind, data, part in tracked if tracks else ():
        name = f"{prefix} {kind.upper()} tracks"
        layer = tracks_layer(data, name, kind, meta, parents=part.lineage.parents, visible=visible)
        rows = layer[0] if layer is not None else np.zeros((0, 2))
        _warn_lineage(part, rows, first)
        if layer is not None:
            out.append(layer)
    return out


def _warn_shape(seq: CTCSequence, masks: LazyFrames) -> None:
    """Masks must cover the images pixel for pixel (an RGB image's channels aside)."""
    if seq.images is None:
        return
    image, label = seq.images.frame_shape, masks.frame_shape
    if image != label and not (image[:-1] == label and image[-1] in (3, 4)):
        warnings.warn(
            f"{masks.files.folder}: label frames are {label} but the images in "
            f"{seq.images.files.folder} are {image}; the layers will not line up",
            CTCWarning,
            stacklevel=3,
        )


def _warn_lineage(part: TrackedMasks, rows: np.ndarray, first: int) -> None:
    """Check the lineage file against the masks, from the tracks rows already computed (no
    second pass over the frames): a track with no mask usually means a wrong or stale file."""
    presence: dict[int, list[int]] = {}
    for label, t in rows[:, :2].astype(np.int64):
        presence.setdefault(int(label), []).append(first + int(t))
    absent = sorted(set(part.lineage.tracks) - set(presence))
    if absent:
        shown = ", ".join(map(str, absent[:5])) + (" …" if len(absent) > 5 else "")
        problem = f"names label(s) {shown} that no mask in {part.folder.name} has"
    else:
        try:
            part.lineage.validate(presence=presence, source=part.lineage_path)
            return
        except CTCFormatError as exc:
            problem = exc.problem
    warnings.warn(f"{part.lineage_path}: {problem}", CTCWarning, stacklevel=3)


def layers_from_arrays(
    name: str,
    images,
    labels=None,
    parents: Mapping[int, int] | None = None,
    *,
    first_frame: int = 0,
    tracks: bool = True,
) -> list[LayerData]:
    """Layers of an in-memory sequence (synthetic data, tracker output): image, TRA, tracks."""
    meta = {"sequence": name, "first_frame": first_frame}
    out = [image_layer(images, name, meta)]
    if labels is not None:
        parents = dict(parents or {})
        out.append(labels_layer(labels, f"{name} TRA", "tra", meta, parents=parents))
        layer = tracks and tracks_layer(labels, f"{name} TRA tracks", "tra", meta, parents=parents)
        if layer:
            out.append(layer)
    return out


def layers_from_path(path: str | Path, *, tracks: bool = True) -> list[LayerData]:
    """Layers for any CTC path that :func:`ctc_kind` accepts.

    A sequence, ``_GT``, ``_GT/TRA`` or ``_RES`` folder opens that one sequence (with its
    existing siblings). A dataset root opens every sequence of every split, named
    ``"<split>/<name>"`` (just ``"<name>"`` without splits); only the first sequence's layers are
    visible, since all sequences share the same coordinates. Images stay lazy throughout.
    """
    path = Path(path)
    kind = ctc_kind(path)
    if kind is None:
        raise CTCFormatError(path, "not a CTC sequence, GT, RES or dataset folder")
    if kind != "dataset":
        return layers_from_sequence(open_sequence(path), tracks=tracks)
    out: list[LayerData] = []
    for split, folders in find_sequence_folders(path).items():  # train, val, test order
        for folder in folders:
            seq = open_sequence(folder)
            prefix = f"{split}/{seq.name}" if split else seq.name
            out.extend(
                layers_from_sequence(seq, prefix, split=split, tracks=tracks, visible=not out)
            )
    return out


def links_from_metadata(metadata: Mapping[str, Any] | None) -> tuple[dict[int, int], int]:
    """The parent links and the first CTC frame a layer made by this plugin carries
    (``{}`` and 0 for other layers)."""
    metadata = metadata or {}
    parents = {int(d): int(p) for d, p in (metadata.get(PARENTS_KEY) or {}).items()}
    return parents, int((metadata.get(META_KEY) or {}).get("first_frame", 0))


def parents_from_graph(graph: Mapping[int, Sequence[int] | int] | None) -> dict[int, int]:
    """napari tracks graph ``{daughter: [parent]}`` -> ``{daughter: parent}`` (CTC: one parent)."""
    out = {}
    for daughter, ps in (graph or {}).items():
        ps = [ps] if isinstance(ps, (int, np.integer)) else list(ps)
        if len(ps) > 1:
            raise CTCFormatError(
                "<tracks graph>", f"track {daughter} has {len(ps)} parents {ps}; CTC allows one"
            )
        if ps:
            out[int(daughter)] = int(ps[0])
    return out
