"""Accuracy regression tests with the shipped ``demo`` model (trained on synthetic data only).

The demo model segments and tracks the synthetic styles it was trained on, so these tests guard
real accuracy: a change that breaks tracking (memory, thresholds, preprocessing) fails them. Each
test tracks a small fresh movie (seeds never used in training) with the real TrackingSession and
scores it with py-ctcmetrics. The sabotage tests break the tracker on purpose and check that the
same bars then fail, so the bars measure something. Numbers behind the bars:
docs/results/demo_model.md.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from napari_cellsam2.datasets.mother_machine import mother_machine
from napari_cellsam2.datasets.nuclei import nuclei_field
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import session as session_module
from napari_cellsam2.training.tracking_validation import ValidationMovie, score_movie

# Regression bars: the shipped model's measured scores on these movies (TRA 0.827 / 0.710,
# SEG 0.558 / 0.562 for trench / nuclei) less a margin. They are NOT issue 10's bars (TRA 0.90,
# SEG 0.75 per style, click IoU 0.85), which this model does not reach
# (docs/results/demo_model.md). Broken on purpose: no memory gives TRA 0.08 / 0.06; a flipped
# mask threshold keeps TRA at 0.70 / 0.66 (flipped masks still overlap the cells) but drops SEG
# to 0.22 / 0.07.
TRA_GT_BAR = 0.65
SEG_GT_BAR = 0.45
FRAMES = 12


@pytest.fixture(scope="module")
def demo():
    loaded = load_model("demo", "cpu")
    assert loaded.kind == "demo" and not loaded.is_random
    assert "trained on synthetic data only" in loaded.description
    return loaded.model


def movies() -> dict[str, ValidationMovie]:
    trench = mother_machine(frames=FRAMES, height=256, width=32, seed=90_001)
    nuclei = nuclei_field(frames=FRAMES, n_cells=6, radius=9.0, seed=90_002)
    return {
        name: ValidationMovie(name, seq.images, seq.labels, dict(seq.parents))
        for name, seq in (("trench", trench), ("nuclei", nuclei))
    }


@contextmanager
def sabotage(kind: str, model):
    """Break the tracker on purpose: no memory, or the mask threshold flipped."""
    with pytest.MonkeyPatch.context() as mp:
        if kind == "no memory":
            encode = model._encode_new_memory

            def forget(*args, **kwargs):
                features, position = encode(*args, **kwargs)
                return torch.zeros_like(features), position

            mp.setattr(model, "_encode_new_memory", forget)
        elif kind == "flipped threshold":
            resolve = session_module.resolve_overlaps
            flipped = lambda logits, ids: resolve(-logits, ids)  # noqa: E731
            mp.setattr(session_module, "resolve_overlaps", flipped)
        yield


def passes(scores: dict[str, float]) -> bool:
    return scores["TRA"] >= TRA_GT_BAR and scores["SEG"] >= SEG_GT_BAR


@pytest.mark.parametrize("style", ["trench", "nuclei"])
def test_gt_seeded_tracking_scores(demo, style):
    scores = score_movie(demo, movies()[style], FRAMES)
    assert passes(scores), scores


@pytest.mark.parametrize("kind", ["no memory", "flipped threshold"])
def test_broken_tracker_fails_the_bars(demo, kind):
    movie = movies()["trench"]
    with sabotage(kind, demo):
        scores = score_movie(demo, movie, FRAMES)
    assert not passes(scores), (kind, scores)
