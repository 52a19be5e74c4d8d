"""The tracking session follows transformers' own video propagation (its reference semantics),
so drift in the transformers internals the session relies on is caught here."""

from __future__ import annotations

import numpy as np
import torch
from transformers import Sam2VideoInferenceSession

from napari_cellsam2.model.preprocess import preprocess_frames
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import TrackingSession


def _reference_masks(model, frames: np.ndarray, xy: tuple[float, float]) -> np.ndarray:
    """transformers' propagate_in_video_iterator from one click on frame 0 → (T, Y, X) bool."""
    video, box = preprocess_frames(frames, model.config.image_size)
    session = Sam2VideoInferenceSession(
        video=video, video_height=box.height, video_width=box.width, dtype=torch.float32
    )
    idx = session.obj_id_to_idx(1)
    point = torch.tensor(box.points_to_model(np.array([xy])), dtype=torch.float32)
    session.add_point_inputs(
        idx,
        0,
        {
            "point_coords": point[None, None],
            "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
        },
    )
    session.obj_with_new_inputs = [1]
    with torch.inference_mode():
        model(inference_session=session, frame_idx=0)
        logits = {
            o.frame_idx: o.pred_masks[0, 0] for o in model.propagate_in_video_iterator(session, 0)
        }
    return np.stack([box.logits_to_original(logits[t]).numpy() > 0 for t in range(len(frames))])


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
