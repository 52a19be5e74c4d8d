"""CTC scores of a result against ground truth, computed by py-ctcmetrics.

We validate both folders with our CTC layer, line frames up ourselves (see :mod:`.alignment`) and
then hand py-ctcmetrics' own matching (``match``), validity check (``valid``) and metric code
(``calculate_metrics``) the prepared inputs. Its ``evaluate_sequence`` is not used because it
pairs files by position and needs frame 0 first, and its recursive mode only finds ``01``/``02``.
py-ctcmetrics is imported on first use: it pulls in scikit-learn (seconds to import).
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing as mp
import os
import sys
import tempfile
import warnings
from collections.abc import Generator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..ctc import CTCFormatError, GroundTruth, Lineage, TrackedMasks, read_gt, read_res
from ..ctc.writer import Progress, iter_write_res, run_to_end
from .alignment import AlignedSequence, align
from .metrics import plan, requested

Scores = dict[str, float | None]

# Per-frame matching (sklearn's confusion_matrix, a Python loop over pixels, ~0.3 us/pixel)
# dominates the cost. Below this many pixels a process pool costs more than it saves.
_PARALLEL_PIXELS = 1 << 22
_MAX_WORKERS = 8


class PartialResultWarning(UserWarning):
    """RES lacks some GT frames; they were scored as frames with no detections."""


def auto_workers(frames: int, pixels_per_frame: int) -> int:
    """Processes for matching: 1 for small sequences, else up to 8 (forked, Linux only)."""
    if not sys.platform.startswith("linux") or frames * pixels_per_frame <= _PARALLEL_PIXELS:
        return 1
    return max(1, min(_MAX_WORKERS, os.cpu_count() or 1, frames))


def _match_frames(ref: list[str], comp: list[str | None], workers: int) -> dict[str, list]:
    """py-ctcmetrics' per-frame matching, in ``workers`` processes.

    Processes, not threads: the work holds the GIL. On Linux they are forked, as py-ctcmetrics'
    own pool does, so a caller's script is never re-imported; elsewhere they are spawned.
    """
    from ctc_metrics.utils.representations import match

    workers = min(workers, len(ref))
    if workers > 1:
        context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        chunk = max(1, len(ref) // (4 * workers))
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            found = list(pool.map(match, ref, comp, chunksize=chunk))
    else:
        found = [match(r, c) for r, c in zip(ref, comp, strict=True)]
    keys = ("labels_ref", "labels_comp", "mapped_ref", "mapped_comp", "ious")
    return {k: [f[i] for f in found] for i, k in enumerate(keys)}


def _has_edges(lineage: Lineage) -> bool:
    """LNK divides by the number of GT edges, so it is undefined without any."""
    return any(t.end > t.begin or t.parent for t in lineage)


def _drop_undefined_bc(results: dict) -> None:
    """BC(i) is undefined without GT divisions (py-ctcmetrics says 0): None, and BIO/OP_CLB
    are re-averaged without it, as the CTC does for missing biological measures."""
    if results.get("gt_divisions") != 0:
        return
    from ctc_metrics.metrics import bio, op_clb

    for key in [k for k in results if k.startswith("BC(")]:
        results[key] = None
    for key in [k for k in results if k.startswith("BIO(")]:
        results[key] = bio(results["CT"], results["TF"], None, results["CCA"])
    for key in [k for k in results if k.startswith("OP_CLB(")]:
        bio_i = results[f"BIO{key[len('OP_CLB') :]}"]
        results[key] = None if results.get("LNK") is None else op_clb(results["LNK"], bio_i)


def _as_score(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def score_aligned(
    aligned: AlignedSequence, names: list[str], gt: GroundTruth, res: TrackedMasks, workers: int
) -> Scores:
    """Run py-ctcmetrics on lined-up inputs; scores it cannot define are ``None``."""
    from ctc_metrics.metrics import valid
    from ctc_metrics.scripts.evaluate import calculate_metrics

    todo = plan(names)
    if gt.seg is None:
        todo = [m for m in todo if m != "SEG"]
    if gt.tra is None or len(aligned.ref_tra) < 2:
        # py-ctcmetrics builds its track graph from frame pairs and fails on a single frame.
        todo = [m for m in todo if m == "SEG"]
    elif not _has_edges(gt.tra.lineage):
        todo = [m for m in todo if m != "LNK"]
    if not todo:
        return {name: None for name in names}
    if gt.tra is not None and len(res.lineage) == 0:
        # py-ctcmetrics calls a result without tracks invalid (and crashes on it).
        warnings.warn(
            f"{res.folder}: result has no tracks; py-ctcmetrics calls it invalid",
            UserWarning,
            stacklevel=3,
        )
        return {name: (0.0 if name == "Valid" else None) for name in names}
    traj: dict = {}
    is_valid = 1
    if any(m not in ("SEG", "CCA") for m in todo):
        traj = _match_frames(aligned.ref_tra, aligned.comp_tra, workers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Empty frame" notes on frames RES lacks
            is_valid = valid(aligned.comp_tra, aligned.comp_tracks, traj["labels_comp"])
    segm = _match_frames(aligned.ref_seg, aligned.comp_seg, workers) if "SEG" in todo else {}
    with (
        contextlib.redirect_stdout(io.StringIO()),
        np.errstate(divide="ignore", invalid="ignore"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)
        results = calculate_metrics(
            aligned.comp_tracks, aligned.ref_tracks, traj, segm, list(todo), is_valid
        )
    if "Valid" in todo:
        results["Valid"] = is_valid
    _drop_undefined_bc(results)
    return {name: _as_score(results.get(name)) for name in names}


def _load_gt(gt: Path) -> tuple[GroundTruth, int]:
    """Read and fully validate a GT folder; also return its largest label."""
    gt_data = read_gt(gt)
    gt_max = 0
    if gt_data.tra is not None:
        gt_data.tra.validate()
        if len(gt_data.tra.lineage) == 0:
            raise CTCFormatError(gt_data.tra.lineage_path, "ground truth has no tracks")
        gt_max = max(gt_data.tra.lineage.tracks)
    if gt_data.seg is not None:
        gt_max = max(gt_max, *(int(f.max()) for f in gt_data.seg))
    return gt_data, gt_max


def evaluate_folders(
    gt: str | Path,
    res: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    allow_partial: bool = True,
) -> Scores:
    """Scores of the CTC result folder ``res`` against the ground-truth folder ``gt``.

    ``gt`` holds ``TRA/`` and/or ``SEG/``; folder names do not matter and frames may start at any
    index. ``metrics`` are score names (default :data:`DEFAULT_METRICS`, see :func:`supported`).
    Scores that cannot be defined are ``None``: SEG without GT SEG; all but SEG without GT TRA or
    with a single TRA frame; LNK without GT links; BC(i) without GT divisions; CCA without a
    complete GT cell cycle; all but Valid (0) for a result without tracks.
    GT frames that RES lacks count as frames without detections (a
    :class:`PartialResultWarning` says which), or raise with ``allow_partial=False``; RES frames
    outside the GT range raise. ``workers`` processes match masks (default :func:`auto_workers`).
    Both folders are fully validated first; a :class:`CTCFormatError` names the culprit.
    """
    names = requested(metrics)
    gt_data, gt_max = _load_gt(Path(gt))
    res_data = read_res(res)
    res_data.validate()
    return _score(gt_data, gt_max, res_data, names, workers, allow_partial)


def _score(
    gt_data: GroundTruth,
    gt_max: int,
    res_data: TrackedMasks,
    names: Sequence[str],
    workers: int | None,
    allow_partial: bool,
) -> Scores:
    res = res_data.folder
    with tempfile.TemporaryDirectory(prefix="cellsam2-eval-") as scratch:
        aligned = align(gt_data, res_data, Path(scratch), gt_max)
        if aligned.missing:
            shown = _ranges(aligned.missing)
            if not allow_partial:
                raise CTCFormatError(res, f"result lacks ground-truth frame(s) {shown}")
            warnings.warn(
                f"{res}: result lacks ground-truth frame(s) {shown}; scored as empty frames",
                PartialResultWarning,
                stacklevel=2,
            )
        if workers is None:
            frames = len(aligned.ref_tra) + len(aligned.ref_seg)
            workers = auto_workers(frames, int(np.prod(res_data.masks.frame_shape)))
        return score_aligned(aligned, names, gt_data, res_data, max(1, int(workers)))


def iter_evaluate_arrays(
    gt: str | Path,
    labels: np.ndarray,
    lineage: Lineage,
    first_frame: int = 0,
    metrics: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    allow_partial: bool = True,
) -> Generator[Progress, None, Scores]:
    """:func:`evaluate_arrays`, yielding ``(frames written, frames)`` while the result is
    written (the long part before scoring); closing it early removes the temporary result."""
    names = requested(metrics)
    gt_data, gt_max = _load_gt(Path(gt))  # bad GT fails before the result is written
    with tempfile.TemporaryDirectory(prefix="cellsam2-res-") as tmp:
        res = yield from iter_write_res(Path(tmp) / "RES", labels, lineage, first_frame)
        # our writer validated the result: no second pass over it
        return _score(gt_data, gt_max, read_res(res), names, workers, allow_partial)


def evaluate_arrays(
    gt: str | Path,
    labels: np.ndarray,
    lineage: Lineage,
    first_frame: int = 0,
    metrics: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    allow_partial: bool = True,
) -> Scores:
    """Scores of an in-memory result (``(T,Y,X)`` labels + lineage) against ``gt``.

    The result is written to a temporary RES folder with our writer (which validates it), with
    frame ``i`` of ``labels`` stored as CTC frame ``first_frame + i``.
    """
    steps = iter_evaluate_arrays(
        gt, labels, lineage, first_frame, metrics, workers=workers, allow_partial=allow_partial
    )
    return run_to_end(steps)


def empty_result_scores(
    gt: str | Path,
    labels: np.ndarray,
    lineage: Lineage,
    first_frame: int = 0,
    metrics: Sequence[str] | None = None,
) -> Scores:
    """Scores of a result that found nothing: 0 for every metric the GT defines.

    py-ctcmetrics leaves an empty result unscored (None); for a comparison it found nothing.
    The metrics the GT defines are those of the GT (``labels`` + ``lineage``) scored against
    itself.
    """
    defined = evaluate_arrays(gt, labels, lineage, first_frame, metrics)
    return {k: 0.0 for k, v in defined.items() if v is not None}


def _ranges(indices: list[int]) -> str:
    """``[0,1,2,5]`` -> ``'0-2, 5'`` for messages."""
    parts, start = [], indices[0]
    for prev, cur in zip(indices, [*indices[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(parts)
