"""napari reader: Cell Tracking Challenge folders as lazy image, labels and tracks layers.

Accepts a sequence folder (``01``), ``01_GT``, ``01_GT/TRA`` (or ``SEG``), ``01_RES`` and dataset
roots (with ``train``/``val``/``test`` splits or with ``01``, ``02`` …). Anything else is left to
other readers. A folder that looks like CTC but is broken raises :class:`CTCFormatError` naming
the offending file, so napari shows the user why it could not open. Layer names and metadata
follow :mod:`napari_cellsam2.ctc.napari_layers`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .ctc.napari_layers import LayerData, ctc_kind, layers_from_path

PathArg = str | Path | list[str]


def _single(path: PathArg) -> str | Path | None:
    if isinstance(path, list):
        return path[0] if len(path) == 1 else None
    return path


def napari_get_reader(path: PathArg) -> Callable[[PathArg], list[LayerData]] | None:
    """Return :func:`read_ctc` when ``path`` is a CTC folder (names checked, no pixels read)."""
    single = _single(path)
    if single is None or ctc_kind(single) is None:
        return None
    return read_ctc


def read_ctc(path: PathArg) -> list[LayerData]:
    """Layer data tuples for a CTC path: lazy images, TRA/SEG/RES labels, TRA/RES tracks.

    Time is the 0-based position in the sequence; ``metadata["cellsam2"]["first_frame"]`` holds
    the CTC index of position 0. A dataset root opens every sequence, only the first visible.
    """
    single = _single(path)
    if single is None:
        raise ValueError(f"read_ctc takes one folder, got {len(path)} paths")
    return layers_from_path(single)
