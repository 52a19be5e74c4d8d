"""Automatic cell detection (a grid of clicks, filtered and deduplicated) and ``--prompts auto``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import open_path
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import DetectConfig, TrackingSession
from napari_cellsam2.tracking.detect import Detection, grid_points


def test_grid_follows_the_frame_shape():
    trench = grid_points(256, 32, 32)
    assert trench.shape == (32 * 4, 2)
    assert np.allclose(np.unique(trench[:, 0]), [4, 12, 20, 28])
    assert np.allclose(np.diff(np.unique(trench[:, 1])), 8)
    square = grid_points(100, 100, 10)
    assert square.shape == (100, 2) and square.min() == 5 and square.max() == 95


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="points_per_side"):
        DetectConfig(points_per_side=0)
    with pytest.raises(ValueError, match="nms_iou"):
        DetectConfig(nms_iou=1.5)


def _movie(rng_seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    movie = rng.normal(1000, 100, (3, 48, 64)).clip(0).astype(np.uint16)
    movie[:, 8:20, 8:22] += 3000
    movie[:, 28:42, 36:54] += 3000
    return movie


def test_detections_are_disjoint_ranked_and_large_enough():
    model = build_random_model(tiny_config(64))  # present everywhere: every point decodes a mask
    session = TrackingSession(model, _movie())
    config = DetectConfig(points_per_side=8, min_predicted_iou=0.0, nms_iou=0.3, min_area=5)
    found = session.detect(0, config)
    assert found, "a random model with a raised object score keeps some masks"
    ious = [d.predicted_iou for d in found]
    assert ious == sorted(ious, reverse=True)
    stack = np.stack([d.mask for d in found])
    assert stack.sum(0).max() <= 1  # no pixel in two detections
    assert (stack.sum((1, 2)) >= 5).all()
    assert all(0 <= d.point[0] < 64 and 0 <= d.point[1] < 48 for d in found)
    assert session.object_ids == []  # detecting adds nothing
    # stricter thresholds keep a subset
    strict = session.detect(0, DetectConfig(points_per_side=8, min_predicted_iou=1.0))
    assert len(strict) <= len(found)


def test_detections_become_objects_except_cells_already_tracked():
    model = build_random_model(tiny_config(64))
    session = TrackingSession(model, _movie())
    tracked = np.zeros((48, 64), bool)
    tracked[8:20, 8:22] = True
    session.add_mask(1, 0, tracked)
    session.predict_frame(0)
    new_cell = np.zeros((48, 64), bool)
    new_cell[28:42, 36:54] = True
    same_cell = tracked.copy()
    ids = session.add_detections(
        0, [Detection(same_cell, (14, 14), 0.9, 5.0), Detection(new_cell, (45, 35), 0.8, 5.0)]
    )
    assert ids == [2]
    assert session.prompt_frames(2) == [0]
    # a 256 x 32 trench at a 64 px model: 1 pixel is a quarter of a model pixel, not a cell
    trench = TrackingSession(model, np.zeros((2, 256, 32), np.uint16))
    speck = np.zeros((256, 32), bool)
    speck[100, 10] = True
    assert trench.add_detections(0, [Detection(speck, (10, 100), 0.9, 5.0)]) == []
    with pytest.raises(ValueError, match="shape"):
        session.add_detections(0, [Detection(np.ones((4, 4), bool), (1, 1), 0.9, 1.0)])


def test_track_with_automatic_prompts(ctc_sequence: Path, tmp_path: Path, capsys):
    out = tmp_path / "01_RES"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "auto", "--out", str(out)]
    rc = main(
        [*argv, "--device", "cpu", "--detect-min-predicted-iou", "0", "--direction", "forward"]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "cells on the first frame" in printed.err
    open_path(out).validate()


def test_bad_detect_option_exits_2(ctc_sequence: Path, tmp_path: Path, capsys):
    out = tmp_path / "01_RES"
    argv = ["track", str(ctc_sequence), "--model", "tiny", "--prompts", "auto", "--out", str(out)]
    assert main([*argv, "--detect-nms-iou", "2"]) == 2
    assert "nms_iou" in capsys.readouterr().err
    assert not out.exists()


def test_detection_counts_match_each_cell_once_at_half_iou():
    from napari_cellsam2.evaluation.detection import detection_counts

    gt = np.zeros((10, 10), int)
    gt[0:4, 0:4], gt[6:9, 6:9], gt[0:2, 8:10] = 1, 2, 3
    found = np.zeros((10, 10), int)
    found[0:4, 0:3] = 5  # IoU 0.75 with cell 1
    found[6:9, 6:7] = 7  # IoU 0.33 with cell 2: not a match
    found[5, 0] = 9  # on no cell
    assert detection_counts(found, gt) == {"found": 3, "gt": 3, "matched": 1}
    found[6:9, 6:8] = 7  # IoU 0.67
    assert detection_counts(found, gt)["matched"] == 2
