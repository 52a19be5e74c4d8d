"""The tracking session follows transformers' own video propagation (its reference semantics),
so drift in the transformers internals the session relies on is caught here."""

from __future__ import annotations

import numpy as np
import torch

from napari_cellsam2.model.preprocess import preprocess_frames
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import TrackingSession
from sam2_reference import track_point


def _reference_masks(model, frames: np.ndarray, xy: tuple[float, float]) -> np.ndarray:
    """transformers' propagation from one click on frame 0, as (T, Y, X) bool masks."""
    video, box = preprocess_frames(frames, model.config.image_size)
    point = box.points_to_model(np.array([xy]))[0]
    logits = track_point(model, video, tuple(point), box.height, box.width)
    return np.stack([box.logits_to_original(frame).numpy() > 0 for frame in logits])


def test_session_matches_transformers_propagation():
    torch.manual_seed(0)
    model = build_random_model(tiny_config(64))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (6, 40, 56)).astype(np.uint16)
    frames[:, 10:25, 15:35] += 20000  # a bright "cell"
    xy = (24.0, 17.0)
    expected = _reference_masks(model, frames, xy)
    assert expected.any(axis=(1, 2)).all()  # the object is present on every frame

    session = TrackingSession(model, frames)
    session.add_points(1, 0, [xy])
    results = list(session.propagate("forward"))
    assert [r.frame for r in results] == list(range(6))
    got = session.labels == 1
    mismatch = (got != expected).mean(axis=(1, 2))
    assert mismatch.max() < 0.002, mismatch
