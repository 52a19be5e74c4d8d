"""Shared fixtures: small CTC sequences written with the project's own writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cellsam2.ctc import Lineage, write_gt, write_images


def make_division_labels(frames: int = 6, shape: tuple[int, int] = (40, 30)) -> np.ndarray:
    """Cell 1 moves right, divides at frame 3 into 2 and 3; cell 4 sits still throughout."""
    lab = np.zeros((frames, *shape), np.uint16)
    for t in range(frames):
        x = 2 + t
        if t < 3:
            lab[t, 5:15, x : x + 6] = 1
        else:
            lab[t, 3:9, x : x + 6] = 2
            lab[t, 11:17, x : x + 6] = 3
        lab[t, 25:32, 18:25] = 4
    return lab


@pytest.fixture
def division_labels() -> np.ndarray:
    return make_division_labels()


@pytest.fixture
def ctc_sequence(tmp_path: Path, division_labels: np.ndarray) -> Path:
    """A valid sequence ``tmp/01`` with ``01_GT`` (TRA on all frames, SEG on 0 and 3)."""
    lineage = Lineage.from_labels(division_labels, {2: 1, 3: 1})
    rng = np.random.default_rng(0)
    images = (division_labels > 0) * 1000 + rng.integers(0, 50, division_labels.shape)
    write_images(tmp_path / "01", images.astype(np.uint16))
    write_gt(tmp_path / "01_GT", division_labels, lineage, seg_frames=[0, 3])
    return tmp_path / "01"


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    """A napari viewer with the synthetic sample and the CellSAM2 dock, the tiny model loaded
    (GUI tests; imported lazily so that non-GUI test runs never import Qt)."""
    from napari_cellsam2.widgets import CellSAM2Widget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellsam2", "mother_machine")
    widget = CellSAM2Widget(viewer)
    viewer.window.add_dock_widget(widget, name="CellSAM2")
    model = widget.model_panel
    model.add_spec("tiny")
    with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
        model.load("tiny")
    qtbot.waitUntil(lambda: not widget.state.busy, timeout=120_000)
    return viewer, widget


def pytest_configure(config):
    """One torch/OpenMP thread per process: on a 2-core CI machine shared with Xvfb, the Qt
    thread and the accelerate test's second process, oversubscribed OpenMP threads make each
    small op wait for a descheduled thread (measured: tests ~10x slower under load)."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
