"""Make any labels array CTC-valid: what users paint by hand rarely follows the CTC rules.

A label that disappears and comes back becomes several tracks (each later piece gets a new label
and a parent link to the piece before it, CTC's way of bridging a gap); parent links that break
the rules (missing parent, parent not ending before its daughter begins) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .errors import CTCFormatError
from .lineage import Lineage, Track, label_presence
from .writer import Existing

Parts = dict[int, list[tuple[int, int, int]]]  # label -> its pieces as (label, first, last)


def _runs(frames: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous (first, last) runs of frame indices."""
    runs: list[tuple[int, int]] = []
    for f in sorted(frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f)
        else:
            runs.append((f, f))
    return runs


def plan_segments(
    presence: Mapping[int, Iterable[int]],
    parents: Mapping[int, int] | None = None,
    first_frame: int = 0,
) -> tuple[Lineage, Parts]:
    """The CTC lineage of labels present on the given 0-based frames, and each label's pieces.

    A label with gaps is split: each later piece gets a fresh label (above all others) whose
    parent is the piece before. A daughter links to the last piece of its parent that ends
    before the daughter begins; a link that cannot satisfy that is dropped.
    """
    parents = {int(d): int(p) for d, p in (parents or {}).items()}
    runs = {int(lab): r for lab, frames in presence.items() if (r := _runs(frames))}
    next_label = max(runs, default=0) + 1
    parts: Parts = {}
    for label in sorted(runs):
        pieces = []
        for k, (a, b) in enumerate(runs[label]):
            pieces.append((label if k == 0 else next_label, a, b))
            next_label += k > 0
        parts[label] = pieces
    tracks = []
    for label, pieces in parts.items():
        begin = pieces[0][1]
        before = [p for p in parts.get(parents.get(label, 0), []) if p[2] < begin]
        parent = before[-1][0] if before else 0
        for piece, a, b in pieces:
            tracks.append(Track(piece, a + first_frame, b + first_frame, parent))
            parent = piece
    return Lineage.from_tracks(sorted(tracks)), parts


def relabel_segments(labels: np.ndarray, parts: Parts, copy: bool = True) -> np.ndarray:
    """``labels`` with the later pieces of split labels renamed: in a copy, or in ``labels``
    itself when the caller owns them (``copy=False``; a dtype too small still copies); the
    input if nothing is split."""
    if all(len(p) == 1 for p in parts.values()):
        return labels
    top = max(piece for p in parts.values() for piece, _, _ in p)
    if top > np.iinfo(labels.dtype).max:
        out = labels.astype(np.uint32)
    else:
        out = labels.copy() if copy else labels
    for label, pieces in parts.items():
        for piece, a, b in pieces[1:]:
            block = out[a : b + 1]
            block[block == label] = piece
    return out


def make_consistent(
    labels: np.ndarray,
    parents: Mapping[int, int] | None = None,
    first_frame: int = 0,
    presence: Mapping[int, Iterable[int]] | None = None,
    copy: bool = True,
) -> tuple[np.ndarray, Lineage]:
    """Return ``(labels, lineage)`` that pass :meth:`Lineage.validate`; copies only if needed
    (never with ``copy=False``: the caller's own copy is relabelled in place).

    ``presence`` (label -> 0-based frames), when the caller already knows it, saves a pass over
    the labels.
    """
    if presence is None:
        presence = label_presence(labels)
    lineage, parts = plan_segments(presence, parents, first_frame)
    return relabel_segments(labels, parts, copy), lineage


class EmptyLabelsError(CTCFormatError):
    """The labels to export hold no cell on any frame: a 0-track result is almost always a
    wrong layer or an unfinished session, so writing it takes an explicit ``allow_empty``."""


def iter_export_labels(
    folder,
    labels: np.ndarray,
    parents: Mapping[int, int] | None = None,
    first_frame: int = 0,
    fmt: str = "res",
    *,
    existing: Existing = "refuse",
    allow_empty: bool = False,
):
    """:func:`export_labels`, yielding ``(frames written, frames to write)`` as it goes; closing
    the generator early (cancel) leaves nothing behind. Returns ``(labels, lineage)``."""
    from .writer import iter_write_gt, iter_write_res

    if fmt not in ("res", "gt"):
        raise ValueError(f"unknown export format {fmt!r} (use 'res' or 'gt')")
    # A copy, read once: the lineage and every written frame come from the same labels even
    # when the caller's array changes meanwhile (a tracking job writing the dock's live layer).
    fixed, lineage = make_consistent(np.array(labels), parents, first_frame, copy=False)
    if not len(lineage) and not allow_empty:
        raise EmptyLabelsError(
            folder, "the labels hold no cell on any frame; not writing a result with 0 tracks"
        )
    if fmt == "res":
        yield from iter_write_res(folder, fixed, lineage, first_frame, existing=existing)
    else:
        frames = list(range(first_frame, first_frame + len(fixed)))
        yield from iter_write_gt(
            folder, fixed, lineage, seg_frames=frames, first_frame=first_frame, existing=existing
        )
    return fixed, lineage


def export_labels(
    folder,
    labels: np.ndarray,
    parents: Mapping[int, int] | None = None,
    first_frame: int = 0,
    fmt: str = "res",
    *,
    existing: Existing = "refuse",
    allow_empty: bool = False,
) -> tuple[np.ndarray, Lineage]:
    """Write (possibly hand-edited) labels as CTC ``res`` (RES) or ``gt`` (GT/TRA, SEG on all
    frames) after :func:`make_consistent`; returns what was written.

    An existing output is refused unless ``existing`` says otherwise (see
    :data:`~napari_cellsam2.ctc.writer.Existing`); labels with no cell at all raise
    :class:`EmptyLabelsError` unless ``allow_empty``.
    """
    from .writer import run_to_end

    return run_to_end(
        iter_export_labels(
            folder,
            labels,
            parents,
            first_frame,
            fmt,
            existing=existing,
            allow_empty=allow_empty,
        )
    )
