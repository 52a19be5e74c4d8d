"""Validation on the tracking path: what the user gets from a model, scored as CTC.

A training loss in train mode can fall while tracking gets worse (issue 9: the kept multimask
output was never trained). So every epoch the fine-tuned model also runs the real
:class:`~napari_cellsam2.tracking.TrackingSession` on held-out movies and py-ctcmetrics scores it:

* each movie is cut to its first ``val_tracking_frames`` frames;
* every cell of the GT on the first frame is seeded with its mask (what ``cellsam2 track
  --prompts gt-first-frame`` does), then the session propagates forward; no later prompt, so
  cells entering later and daughters of divisions are found only as far as the model finds
  them (TRA counts what it misses);
* the cut GT is written as a temporary CTC ``NN_GT`` (TRA on every frame, SEG = TRA masks) and
  the result is scored with TRA, SEG, DET, LNK and BC(0) (the last two judge divisions; BC(0)
  only where the GT has divisions); an empty result scores 0 where the GT is defined.

Cost: one tracking pass per movie, at most ``val_tracking_sequences`` movies (evenly spaced).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "ValidationMovie",
    "field_name",
    "pick_movies",
    "score_movie",
    "tracking_scores",
]

METRICS = ("TRA", "SEG", "DET", "LNK", "BC(0)")  # LNK, BC(0): divisions followed or not


@dataclass(frozen=True)
class ValidationMovie:
    """A held-out movie with its GT: ``images[t]`` reads one frame, ``labels`` (T, Y, X)."""

    name: str
    images: Any
    labels: Any
    parents: dict[int, int]


def field_name(metric: str) -> str:
    """``val_TRA`` … ``val_BC0``: the ValidationEvent / metrics.jsonl name of a metric."""
    return "val_" + metric.replace("(", "").replace(")", "")


def pick_movies(movies: list[ValidationMovie], count: int | None) -> list[ValidationMovie]:
    """At most ``count`` movies, evenly spaced over the list (all when ``count`` is None)."""
    if count is None or count >= len(movies):
        return list(movies)
    if count < 1:
        return []
    index = np.linspace(0, len(movies) - 1, count).round().astype(int)
    return [movies[i] for i in sorted(set(index.tolist()))]


def score_movie(
    model: Any,
    movie: ValidationMovie,
    max_frames: int | None,
    precision: str = "auto",
    divisions: str | None = None,
) -> dict[str, float]:
    """CTC scores of the session seeded from the GT on the movie's first frame (see module);
    ``divisions`` is the session's division mode (None: the model's default)."""
    from ..ctc import write_gt
    from ..ctc.repair import make_consistent
    from ..evaluation.scoring import empty_result_scores, evaluate_arrays
    from ..tracking.session import TrackingSession

    length = len(movie.labels) if max_frames is None else min(len(movie.labels), max_frames)
    images = np.stack([np.asarray(movie.images[t]) for t in range(length)])
    gt, lineage = make_consistent(np.asarray(movie.labels[:length]), movie.parents)
    session = TrackingSession(model, images, precision=precision, divisions=divisions)
    if gt[0].any():
        # a cell too small for the model is not seeded (the GT still counts it as missed)
        session.seed_from_labels(0, gt[0], skip_vanishing=True)
        for _ in session.propagate("forward"):
            pass
    result = session.result()
    with tempfile.TemporaryDirectory(prefix="cellsam2-val-") as tmp:
        folder = write_gt(Path(tmp) / "01_GT", gt, lineage, seg_frames=range(length))
        if not result.labels.any():
            return empty_result_scores(folder, gt, lineage, metrics=METRICS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # partial results are scored as such
            scores = evaluate_arrays(folder, result.labels, result.lineage, metrics=METRICS)
    return {k: float(scores[k]) for k in METRICS if scores.get(k) is not None}


def tracking_scores(
    model: Any,
    movies: list[ValidationMovie],
    max_frames: int | None,
    precision: str = "auto",
    divisions: str | None = None,
) -> dict[str, float]:
    """Mean ``val_<metric>`` of :data:`METRICS` over ``movies`` (empty dict for no movies)."""
    per = [score_movie(model, movie, max_frames, precision, divisions) for movie in movies]
    means: dict[str, float] = {}
    for name in METRICS:
        values = [scores[name] for scores in per if name in scores]
        if values:
            means[field_name(name)] = float(np.mean(values))
    return means
