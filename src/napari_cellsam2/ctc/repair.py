"""Make any labels array CTC-valid: what users paint by hand rarely follows the CTC rules.

A label that disappears and comes back becomes several tracks (each later piece gets a new label
and a parent link to the piece before it, CTC's way of bridging a gap); parent links that break
the rules (missing parent, parent not ending before its daughter begins) are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .lineage import Lineage, Track, label_presence


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted frame indices as (begin, end) pairs."""
    runs = [[frames[0], frames[0]]]
    for f in frames[1:]:
        if f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return [(b, e) for b, e in runs]


def make_consistent(
    labels: np.ndarray, parents: Mapping[int, int] | None = None, first_frame: int = 0
) -> tuple[np.ndarray, Lineage]:
    """Return ``(labels, lineage)`` that pass :meth:`Lineage.validate`; copies only if needed."""
    parents = {int(d): int(p) for d, p in (parents or {}).items()}
    presence = label_presence(labels, first_frame)
    next_label = max(presence, default=0) + 1
    out = labels
    segments: dict[int, list[Track]] = {}
    for label, frames in sorted(presence.items()):
        runs = _runs(frames)
        pieces = [Track(label, *runs[0])]
        for begin, end in runs[1:]:
            if out is labels:
                out = labels.copy()
            out[begin - first_frame : end - first_frame + 1][
                out[begin - first_frame : end - first_frame + 1] == label
            ] = next_label
            pieces.append(Track(next_label, begin, end, pieces[-1].label))
            next_label += 1
        segments[label] = pieces
    tracks = []
    for label, pieces in segments.items():
        first = pieces[0]
        parent = parents.get(label, 0)
        candidates = [t for t in segments.get(parent, []) if t.end < first.begin]
        link = candidates[-1].label if candidates else 0
        tracks.append(Track(first.label, first.begin, first.end, link))
        tracks.extend(pieces[1:])
    return out, Lineage({t.label: t for t in sorted(tracks)})


def export_labels(
    folder,
    labels: np.ndarray,
    parents: Mapping[int, int] | None = None,
    first_frame: int = 0,
    fmt: str = "res",
) -> tuple[np.ndarray, Lineage]:
    """Write (possibly hand-edited) labels as CTC ``res`` (RES) or ``gt`` (GT/TRA, SEG on all
    frames) after :func:`make_consistent`; returns what was written."""
    from .writer import write_gt, write_res

    fixed, lineage = make_consistent(np.asarray(labels), parents, first_frame)
    if fmt == "res":
        write_res(folder, fixed, lineage, first_frame)
    elif fmt == "gt":
        frames = list(range(first_frame, first_frame + len(fixed)))
        write_gt(folder, fixed, lineage, seg_frames=frames, first_frame=first_frame)
    else:
        raise ValueError(f"unknown export format {fmt!r} (use 'res' or 'gt')")
    return fixed, lineage
