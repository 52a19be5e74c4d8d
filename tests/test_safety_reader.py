"""The napari reader says why it turns a folder down, warns about suspect CTC data, and makes
napari open CTC folders without asking which reader to use (issue 11, item 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellsam2._reader import CTC_FOLDER_PATTERNS, napari_get_reader, read_ctc
from napari_cellsam2.ctc import CTCWarning, Lineage, write_gt, write_images

PLUGIN = "napari-cellsam2"


def refused_because(path: Path) -> str:
    with pytest.warns(CTCWarning) as record:
        assert napari_get_reader(str(path)) is None
    (message,) = [str(w.message) for w in record if issubclass(w.category, CTCWarning)]
    assert str(path) in message
    return message


def test_folders_the_reader_cannot_take_say_why(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty folder" in refused_because(empty)

    tiffs = tmp_path / "01"
    tiffs.mkdir()
    tifffile.imwrite(tiffs / "img_000.tif", np.zeros((4, 4), np.uint8))
    assert "none named like CTC frames" in refused_because(tiffs)
    assert "'img_000.tif'" in refused_because(tiffs)

    root = tmp_path / "dataset"
    for name in ("01", "02"):
        (root / name).mkdir(parents=True)
    assert "none of its sequence folders (01, 02) holds image frames" in refused_because(root)


def test_a_lineage_naming_a_label_no_mask_has_warns_on_open(tmp_path: Path, division_labels):
    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    gt = write_gt(tmp_path / "01_GT", division_labels, lineage)
    with (gt / "TRA" / "man_track.txt").open("a") as fh:
        fh.write("9 1 2 0\n")
    with pytest.warns(CTCWarning, match=r"man_track.txt: names label\(s\) 9 that no mask"):
        read_ctc(str(gt))


def test_label_frames_of_another_shape_than_the_images_warn_on_open(tmp_path, division_labels):
    write_images(tmp_path / "01", np.zeros((6, 50, 30), np.uint16))
    write_gt(tmp_path / "01_GT", division_labels, Lineage.from_labels(division_labels))
    shapes = r"label frames are \(40, 30\) but the images .* are \(50, 30\)"
    with pytest.warns(CTCWarning, match=shapes):
        read_ctc(str(tmp_path / "01"))


@pytest.mark.gui
def test_ctc_folders_open_without_the_choose_reader_dialog(
    make_napari_viewer, ctc_sequence: Path, tmp_path: Path, division_labels
):
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    try:
        plugins.extension2reader = {}
        viewer = make_napari_viewer()
        # plugin=None: the reader choice of File > Open and drag-and-drop (dialog on error)
        with pytest.raises(MultipleReaderError):  # what napari does for any folder at first
            viewer.open(str(ctc_sequence), plugin=None)
        viewer.open(str(ctc_sequence), plugin=PLUGIN)  # the user picks CellSAM2 once
        assert set(CTC_FOLDER_PATTERNS) <= set(plugins.extension2reader)
        other = tmp_path / "elsewhere"
        write_images(other / "02", (division_labels * 9).astype(np.uint16))
        write_gt(other / "02_GT", division_labels, Lineage.from_labels(division_labels))
        for folder in ("02", "02_GT", "02_GT/TRA"):
            viewer.layers.clear()
            viewer.open(str(other / folder), plugin=None)  # no reader named: no dialog
            assert "02 TRA" in [layer.name for layer in viewer.layers]
    finally:
        plugins.extension2reader = saved
