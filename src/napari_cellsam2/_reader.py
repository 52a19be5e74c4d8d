"""napari reader: Cell Tracking Challenge folders as lazy image, labels and tracks layers.

Accepts a sequence folder (``01``), ``01_GT``, ``01_GT/TRA`` (or ``SEG``), ``01_RES`` and dataset
roots (with ``train``/``val``/``test`` splits or with ``01``, ``02`` …). A folder it cannot take
(empty, TIFFs not named like CTC frames, a dataset root without images) is left to other
readers with a :class:`CTCWarning` saying why, which napari shows. A folder that looks like CTC
but is broken raises :class:`CTCFormatError` naming the offending file; one that opens but is
suspect (a lineage naming a label no mask has, masks of another shape than the images) warns.
Layer names and metadata follow :mod:`napari_cellsam2.ctc.napari_layers`.

napari asks "Choose reader" for every folder when several plugins read folders (npe2 matches
``filename_patterns`` against files only, so a manifest cannot claim CTC folders by name) and
remembers an answer for that one folder only. So once a CTC folder has been opened with this
reader, CTC folder names (:data:`CTC_FOLDER_PATTERNS`) are made to prefer it in napari's
reader settings (Preferences > Plugins), unless the user already chose a reader for them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from .ctc.errors import CTCWarning
from .ctc.napari_layers import LayerData, ctc_kind, layers_from_path, why_not_ctc

PathArg = str | Path | list[str]
PLUGIN = "napari-cellsam2"
# fnmatch patterns on the folder's real path + "/" (napari's reader-preference convention).
CTC_FOLDER_PATTERNS = tuple(
    f"*{name}{os.sep}"
    for name in (
        "[0-9][0-9]_GT",
        f"[0-9][0-9]_GT{os.sep}TRA",
        f"[0-9][0-9]_GT{os.sep}SEG",
        "[0-9][0-9]_RES",
        f"{os.sep}[0-9][0-9]",
    )
)


def _single(path: PathArg) -> str | Path | None:
    if isinstance(path, list):
        return path[0] if len(path) == 1 else None
    return path


def napari_get_reader(path: PathArg) -> Callable[[PathArg], list[LayerData]] | None:
    """Return :func:`read_ctc` when ``path`` is a CTC folder (names checked, no pixels read);
    for another folder, warn why it is not one and return None."""
    single = _single(path)
    if single is None:
        return None
    if ctc_kind(single) is None:
        if Path(single).is_dir():
            warnings.warn(
                f"CellSAM2 cannot open {single}: it {why_not_ctc(single)}", CTCWarning, stacklevel=2
            )
        return None
    return read_ctc


def prefer_for_ctc_folders() -> list[str]:
    """Make napari open CTC folder names with this reader without asking; returns the patterns
    added. A pattern the user already assigned (to any reader) is left alone."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    added = [p for p in CTC_FOLDER_PATTERNS if p not in plugins.extension2reader]
    if added:
        plugins.extension2reader = {
            **plugins.extension2reader,
            **dict.fromkeys(added, PLUGIN),
        }
    return added


def read_ctc(path: PathArg) -> list[LayerData]:
    """Layer data tuples for a CTC path: lazy images, TRA/SEG/RES labels, TRA/RES tracks.

    Time is the 0-based position in the sequence; ``metadata["cellsam2"]["first_frame"]`` holds
    the CTC index of position 0. A dataset root opens every sequence, only the first visible.
    Inside a napari window, a successful read also sets :func:`prefer_for_ctc_folders`.
    """
    single = _single(path)
    if single is None:
        raise ValueError(f"read_ctc takes one folder, got {len(path)} paths")
    layers = layers_from_path(single)
    import napari

    if napari.current_viewer() is not None and prefer_for_ctc_folders():
        from napari.utils.notifications import show_info

        show_info(
            "CellSAM2 now opens CTC folders (01, 01_GT, 01_RES …) without asking; change this "
            "in Preferences > Plugins > File extension readers"
        )
    return layers
