"""The tracking session follows transformers' own video propagation (its reference semantics),
so drift in the transformers internals the session relies on is caught here.

The movie is longer than the model's object-pointer window (``max_object_pointers_in_encoder``
= 16 frames, memory window ``num_maskmem`` = 7): the session prunes its memory bank
(``features.prune_outputs``) and that pruning must never remove anything transformers still
reads. The model has O(1) mask logits and non-zero temporal encodings
(:func:`sam2_reference.trained_like_model`), so a missing memory or pointer changes the logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_cellsam2.tracking.session as session_module
from napari_cellsam2.model.preprocess import preprocess_frames
from napari_cellsam2.tracking import TrackingSession
from sam2_reference import track_points, trained_like_model

NUM_FRAMES = 26


def _movie() -> np.ndarray:
    """Two bright drifting cells on noise, (T, Y, X) uint16."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (NUM_FRAMES, 40, 56)).astype(np.uint16)
    for t in range(NUM_FRAMES):
        dx = t // 4
        frames[t, 8:20, 6 + dx : 20 + dx] += 20000
        frames[t, 24:36, 30 + dx // 2 : 44 + dx // 2] += 14000
    return frames


@pytest.fixture(scope="module")
def reference():
    """transformers' propagation of the two clicks, and the session's logits on every frame."""
    model = trained_like_model(64)
    frames = _movie()
    clicks = [(12.0, 14.0), (36.0, 30.0)]
    video, box = preprocess_frames(frames, model.config.image_size)
    points = [tuple(p) for p in box.points_to_model(np.array(clicks))]
    low_res = track_points(model, video, points, box.height, box.width)
    expected = torch.stack([box.logits_to_original(low_res[:, t]) for t in range(NUM_FRAMES)], 1)
    return model, frames, clicks, expected


def _session_logits(model, frames, clicks, monkeypatch) -> torch.Tensor:
    """(N, T, Y, X) logits the session resolved into labels on each frame, in frame order."""
    seen: list[torch.Tensor] = []
    resolve = session_module.resolve_overlaps

    def spy(logits, ids):
        seen.append(logits.clone())
        return resolve(logits, ids)

    monkeypatch.setattr(session_module, "resolve_overlaps", spy)
    session = TrackingSession(model, frames)
    for obj_id, xy in enumerate(clicks, start=1):
        session.add_points(obj_id, 0, [xy])
    results = list(session.propagate("forward"))
    assert [r.frame for r in results] == list(range(NUM_FRAMES))
    assert len(seen) == NUM_FRAMES
    return torch.stack(seen, dim=1)


def test_reference_is_meaningful(reference):
    """O(1) logits and masks neither empty nor full on every frame, for both objects."""
    model, _, _, expected = reference
    config = model.config
    assert NUM_FRAMES > config.max_object_pointers_in_encoder > config.num_maskmem
    assert expected.abs().amax() > 1.0
    fg = (expected > 0).float().mean((2, 3))
    assert ((fg > 0.01) & (fg < 0.9)).all(), fg
    assert model.memory_temporal_positional_encoding.abs().amax() > 0


def test_session_matches_transformers_propagation_on_a_long_movie(reference, monkeypatch):
    model, frames, clicks, expected = reference
    got = _session_logits(model, frames, clicks, monkeypatch)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_pruned_memory_bank_stays_bounded(reference):
    """What the session keeps after a long propagation, per object: the conditioning frame, the
    full memories of the last frame and the ``num_maskmem - 1`` before it (what the next frame
    reads), and pointers over the pointer window."""
    model, frames, clicks, _ = reference
    session = TrackingSession(model, frames)
    for obj_id, xy in enumerate(clicks, start=1):
        session.add_points(obj_id, 0, [xy])
    for _ in session.propagate("forward"):
        pass
    stats = session.memory_stats()
    config = model.config
    assert stats["cond_entries"] == 2
    assert stats["memory_entries"] == 2 * config.num_maskmem
    assert stats["pointer_entries"] == 2 * config.max_object_pointers_in_encoder
