"""Does fine-tuning help? Zero-shot vs LoRA vs full fine-tuning of one base model, measured.

:func:`compare` trains each fine-tuning mode with the project's own training loop on the same
data, seed and optimizer-step budget, then tracks every sequence of the test split with each
model and scores the result with the CTC metrics, and (optionally) measures the annotation
effort with the simulated annotator (:mod:`.annotator`).

Tracking protocol (:mod:`.seeding`): every GT track is prompted on its own first frame - with
its GT mask (seeding ``"gt"``: measures tracking alone) or with one click at its interior point
(seeding ``"clicks"``: what a user gives) - and propagated forward; daughters of a tracked mother
are prompted as a division on their first frame. The annotator starts from the click-seeded
session and corrects one track after another.

Step budget: ``scratch.steps_per_epoch`` is the largest divisor of ``steps`` not above the
batches of one epoch, ``scratch.num_epochs`` the quotient, so both modes take exactly ``steps``
optimizer steps (checked against the run's own step count).

Run folder (``out``)::

    settings.json            what the comparison was asked to do (a rerun must ask the same)
    <mode>/                  lora/ and full/: the training log dir (config.yaml, metrics.jsonl,
                             checkpoints/); every mode: res/<seeding>/<seq>_RES CTC results
    <mode>/result.json       the mode's numbers, written last (atomically): a finished mode is
                             reused by a rerun, an unfinished training run is resumed
    compare.json, compare.png

Scores are py-ctcmetrics' through :func:`score_result`, which closes two of its gaps (frames
without background, empty results). Peak memory is measured per phase (training, evaluation)
with :class:`.peak_memory.PeakMemory`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ctc import CTCSequence, open_dataset, write_res
from ..ctc.writer import atomic_write_text, read_json_record
from ..tracking.export import TrackingResult
from .annotator import TrackEffort, annotate, summarize
from .peak_memory import PeakMemory
from .scoring import empty_result_scores, evaluate_folders
from .seeding import SessionTracker, gt_labels, track_sequence

__all__ = [
    "MODES",
    "REPORTED",
    "SEEDINGS",
    "compare",
    "effort_summary",
    "plan_steps",
    "score_result",
    "sequence_effort",
]

MODES = ("zero-shot", "lora", "full")
SEEDINGS = ("gt", "clicks")
REPORTED = ("TRA", "SEG", "DET", "LNK")
SETTINGS = "settings.json"
RESULT = "result.json"
# Options compare sets itself for every fine-tuning mode; an override must not change them.
_OWNED_KEYS = (
    "launcher.experiment_log_dir",
    "launcher.resume",
    "model.base",
    "model.device",
    "dataset.data_dir",
    "scratch.use_lora",
    "scratch.seed",
    "scratch.num_epochs",
    "scratch.steps_per_epoch",
)

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default ``log`` of :func:`compare`: say nothing."""


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def plan_steps(steps: int, batches: int) -> tuple[int, int]:
    """(num_epochs, steps_per_epoch) with ``num_epochs * steps_per_epoch == steps`` and as few
    epochs as the ``batches`` of one epoch allow."""
    if steps < 1 or batches < 1:
        raise ValueError(f"steps and batches must be >= 1, got {steps}, {batches}")
    per_epoch = max(d for d in range(1, min(steps, batches) + 1) if steps % d == 0)
    return steps // per_epoch, per_epoch


def _check_request(
    modes: Sequence[str], seeding: Sequence[str], steps: int, overrides: Sequence[str]
) -> None:
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {list(modes)}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes repeat: {list(modes)}")
    bad = [s for s in seeding if s not in SEEDINGS]
    if bad or not seeding:
        raise ValueError(f"seeding must be a non-empty subset of {SEEDINGS}, got {list(seeding)}")
    if any(m != "zero-shot" for m in modes) and steps < 1:
        raise ValueError(f"steps must be >= 1 to fine-tune, got {steps}")
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+")
        if "=" not in item:
            raise ValueError(f"training override {item!r} is not of the form key=value")
        if key in _OWNED_KEYS:
            raise ValueError(
                f"training override {item!r}: compare sets {key} itself (use --base, --data, "
                "--out, --steps, --seed or --device)"
            )


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix two different comparisons in one run folder."""
    path = out / SETTINGS
    if path.is_file():
        old = read_json_record(path)
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{out} holds a comparison with other settings ({diff}); use another --out "
                "or delete it"
            )
    else:
        _atomic_json(path, settings)


def _records(log_dir: Path) -> list[dict[str, Any]]:
    """The training log's records. A line that is not a JSON object (a run killed while writing
    it leaves half a line, which a resumed run then appends after) is skipped with one warning:
    the log only feeds the loss curve."""
    path = log_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records, damaged = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "type" in record:
            records.append(record)
        else:
            damaged.append(number)
    if damaged:
        warnings.warn(
            f"{path}: skipped {len(damaged)} damaged line(s) (line {damaged[0]} first); the loss "
            "curve leaves them out",
            stacklevel=2,
        )
    return records


def _loss_curve(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Train loss per global step and validation loss at the end of each epoch (a resumed run
    repeats steps after its last checkpoint: the latest record of a step wins)."""
    loss: dict[int, float] = {}
    epoch_end: dict[int, int] = {}
    val: dict[int, float] = {}
    for r in records:
        if r["type"] == "step":
            loss[r["global_step"]] = r["loss"]
            epoch_end[r["epoch"]] = r["global_step"]
        elif r["type"] == "validation":
            val[r["epoch"]] = r["val_loss"]
    val_at = {epoch_end[e]: v for e, v in val.items() if e in epoch_end}
    return {
        "steps": sorted(loss),
        "loss": [loss[s] for s in sorted(loss)],
        "val_steps": sorted(val_at),
        "val_loss": [val_at[s] for s in sorted(val_at)],
    }


def _train(
    mode: str,
    base: str,
    data_dir: Path,
    log_dir: Path,
    steps: int,
    seed: int,
    device: str,
    image_size: int,
    overrides: Sequence[str],
    log: Log,
) -> tuple[Path, bool]:
    """Fine-tune in ``mode`` for exactly ``steps`` optimizer steps (resuming an unfinished run
    in ``log_dir``); return the final checkpoint folder and whether this call trained."""
    from ..training import load_config, train
    from ..training.data import CTCClipDataset
    from ..training.events import DoneEvent, ErrorEvent, StartEvent, StepEvent
    from ..training.loop import last_checkpoint

    common = [
        f"launcher.experiment_log_dir={log_dir}",
        f"model.base={base}",
        f"model.device={device}",
        f"dataset.data_dir={data_dir}",
        f"scratch.use_lora={mode == 'lora'}",
        f"scratch.seed={seed}",
        f"scratch.resolution={image_size}",
        *overrides,
    ]
    cfg = load_config(common)
    clips = len(CTCClipDataset.from_config(cfg, check=False))
    epochs, per_epoch = plan_steps(steps, math.ceil(clips / cfg.scratch.batch_size))
    budget = [f"scratch.num_epochs={epochs}", f"scratch.steps_per_epoch={per_epoch}"]
    done = last_checkpoint(log_dir)
    done_steps = 0
    if done is not None:
        done_steps = read_json_record(done / "train_state.json", ("global_step",))["global_step"]
    if done is not None and done_steps >= steps:
        log(f"{mode}: reusing {done} ({done_steps} steps)")
        return _best_or(done, log_dir, mode, log), False
    resume = ["launcher.resume=true"] if done is not None else []
    cfg = load_config([*common, *budget, *resume])
    log(f"{mode}: {steps} steps ({epochs} epoch(s) x {per_epoch}) from {clips} clips")
    final: Path | None = None
    every = max(1, steps // 10)
    for event in train(cfg):
        if isinstance(event, StartEvent):
            if event.total_steps != steps:
                raise RuntimeError(f"{mode}: the run plans {event.total_steps} steps, not {steps}")
            log(f"{mode}: trainable {event.trainable:,} / {event.total_params:,} parameters")
        elif isinstance(event, StepEvent):
            if event.global_step % every == 0 or event.global_step == steps:
                log(f"{mode}: step {event.global_step}/{steps} loss {event.loss:.4f}")
        elif isinstance(event, ErrorEvent):
            raise RuntimeError(f"{mode} fine-tuning failed: {event.message}")
        elif isinstance(event, DoneEvent):
            final = event.path
    if final is None:
        raise RuntimeError(f"{mode} fine-tuning saved no checkpoint in {log_dir}")
    return _best_or(final, log_dir, mode, log), True


def _training_cost(
    mode_dir: Path, trained: bool, seconds: float, peak_mb: float | None
) -> tuple[float, float | None]:
    """Training time and peak memory over every run that trained in ``mode_dir`` (kept in its
    ``train_cost.json``): a rerun that reused a finished training (``trained`` false) adds no
    time and keeps the peak of the run that trained."""
    path = mode_dir / "train_cost.json"
    cost = (
        read_json_record(path, ("seconds", "peak_mb"))
        if path.is_file()
        else {"seconds": 0.0, "peak_mb": None}
    )
    if trained:
        cost["seconds"] += seconds
        if peak_mb is not None:
            cost["peak_mb"] = max(peak_mb, cost["peak_mb"] or 0.0)
        _atomic_json(path, cost)
    return cost["seconds"], cost["peak_mb"]


def _best_or(final: Path, log_dir: Path, mode: str, log: Log) -> Path:
    """The checkpoint a user gets from "Use this model": the best epoch by validation TRA when
    the run validated on the tracking path, else the final one."""
    best = log_dir / "checkpoints" / "best"
    if not best.is_dir():
        return final
    from ..training.loop import best_record

    record = best_record(best.parent)
    epoch = record["epoch"] if record else "unknown"
    log(f"{mode}: using the best epoch ({epoch}, by validation TRA): {best}")
    return best


def _mean_scores(per_sequence: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each score over sequences (undefined scores left out; None if never defined)."""
    keys: list[str] = []
    for scores in per_sequence.values():
        keys.extend(k for k in scores if k not in keys)
    out: dict[str, float | None] = {}
    for key in keys:
        values = [s[key] for s in per_sequence.values() if s.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def score_result(result: TrackingResult, seq: CTCSequence, folder: Path) -> dict[str, Any]:
    """CTC scores of a tracking ``result`` on ``seq``, written as the CTC folder ``folder``.

    An empty result is left unscored by the evaluation; for a comparison it found nothing, so
    every score the GT defines (those of the GT scored against itself) is 0.
    """
    labels = result.labels
    # the comparison's own run folder: a rerun rewrites its results
    res = write_res(
        folder, labels, result.lineage, first_frame=result.first_frame, existing="replace"
    )
    if labels.any():
        return evaluate_folders(seq.gt.folder, res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "result has no tracks": handled here
        scores = evaluate_folders(seq.gt.folder, res)
    gt, lineage = gt_labels(seq)
    zeros = empty_result_scores(seq.gt.folder, gt, lineage, first_frame=seq.first_frame)
    return {k: zeros.get(k, v) for k, v in scores.items()}


def _evaluate(
    model: Any,
    sequences: list[CTCSequence],
    mode_dir: Path,
    seeding: Sequence[str],
    annotate_tracks: bool,
    iou_threshold: float,
    max_clicks: int,
    log: Log,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """CTC scores per seeding (mean + per sequence) and the annotation effort of one model."""
    per: dict[str, dict[str, dict[str, float | None]]] = {s: {} for s in seeding}
    efforts, frames = [], 0
    for seq in sequences:
        clicked = None
        for how in seeding:
            tracker = track_sequence(model, seq, "mask" if how == "gt" else "click")
            folder = mode_dir / "res" / how / f"{seq.name}_RES"
            per[how][seq.name] = score_result(tracker.session.result(), seq, folder)
            clicked = tracker if how == "clicks" else clicked
        if annotate_tracks:
            found = sequence_effort(model, seq, iou_threshold, max_clicks, clicked)
            efforts.extend(found)
            frames += seq.num_frames
            log(f"  {seq.name}: {sum(e.clicks for e in found)} clicks for {len(found)} tracks")
    metrics = {how: {"mean": _mean_scores(per[how]), "sequences": per[how]} for how in seeding}
    if not annotate_tracks:
        return metrics, None
    return metrics, effort_summary(efforts, frames, iou_threshold, max_clicks)


def sequence_effort(
    model: Any,
    seq: CTCSequence,
    iou_threshold: float,
    max_clicks: int,
    tracker: SessionTracker | None = None,
) -> list[TrackEffort]:
    """The simulated annotator on one sequence, starting from one click per GT track (on the
    track's first frame), or from ``tracker`` when that click-seeded session already exists."""
    tracker = tracker or track_sequence(model, seq, "click")
    gt, _ = gt_labels(seq)
    return annotate(tracker, gt, iou_threshold=iou_threshold, max_clicks=max_clicks)


def effort_summary(
    efforts: list[TrackEffort], frames: int, iou_threshold: float, max_clicks: int
) -> dict[str, Any]:
    """What ``compare.json`` stores as a mode's ``annotation``: the pooled summary and each
    track's effort (without its click log)."""
    summary = summarize(efforts, frames, iou_threshold, max_clicks).as_dict()
    summary["per_track"] = [{k: v for k, v in vars(e).items() if k != "click_log"} for e in efforts]
    return summary


def _environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def compare(
    base: str,
    data_dir: str | Path,
    out: str | Path,
    *,
    steps: int,
    seed: int = 0,
    modes: Sequence[str] = MODES,
    seeding: Sequence[str] = ("gt",),
    overrides: Iterable[str] = (),
    annotate_tracks: bool = True,
    iou_threshold: float = 0.8,
    max_clicks: int = 3,
    split: str = "test",
    device: str = "auto",
    log: Log = _quiet,
) -> dict[str, Any]:
    """Compare ``modes`` of ``base`` (a :func:`~napari_cellsam2.model.loading.load_model` spec)
    on the CTC dataset ``data_dir`` (``train``/``val``/``test`` splits) and write the run folder
    ``out`` (see the module docstring). ``overrides`` are training ``key=value`` overrides
    applied to every fine-tuning mode. The annotator (``annotate_tracks``) corrects each test
    track up to ``max_clicks`` times towards ``iou_threshold``. Returns what ``compare.json``
    holds; a rerun with the same settings reuses finished modes."""
    from ..model.device import resolve_device
    from ..model.loading import load_model
    from ..training import load_config
    from .compare_report import format_compare_table, plot_compare

    overrides = list(overrides)
    _check_request(modes, seeding, steps, overrides)
    if max_clicks < 0 or not 0.0 < iou_threshold <= 1.0:
        raise ValueError(
            f"need max_clicks >= 0 and 0 < iou_threshold <= 1, got {max_clicks}, {iou_threshold}"
        )
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir}: no such dataset folder")
    sequences = open_dataset(data_dir).sequences(split)
    if Path(base).exists():  # checkpoints record their base spec: keep it valid from any cwd
        base = str(Path(base).resolve())
    # everything a typo can break is checked before the run folder records these settings
    dev = resolve_device(device)
    check = [f"launcher.experiment_log_dir={Path(out) / 'lora'}", f"model.base={base}"]
    ds = load_config([*check, *overrides]).dataset  # unknown keys, bad values (writes nothing)
    if any(m != "zero-shot" for m in modes) and split in (ds.train_split, ds.val_split):
        raise ValueError(
            f"--split {split} is also a split the fine-tuning uses (dataset.train_split="
            f"{ds.train_split}, dataset.val_split={ds.val_split}): compare scores on data the "
            "models neither trained on nor were chosen by"
        )
    out = Path(out)
    # the base is loaded (and a typo in it found) before the settings are recorded, unless every
    # mode is done: then the recorded settings, base included, must match and nothing runs
    todo = [m for m in modes if not (out / m / RESULT).is_file()]
    base_model = load_model(base, dev) if todo else None
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "base": base,
        "data": str(data_dir),
        "split": split,
        "steps": steps,
        "seed": seed,
        "overrides": overrides,
        "seeding": list(seeding),
        "annotate": bool(annotate_tracks),
        "iou_threshold": float(iou_threshold),
        "max_clicks": int(max_clicks),
        "device": device,
    }
    _check_settings(out, settings)
    results: dict[str, Any] = {}
    for mode in modes:
        mode_dir = out / mode
        result_path = mode_dir / RESULT
        if result_path.is_file():
            log(f"{mode}: reusing {result_path}")
            results[mode] = read_json_record(result_path)
            continue
        mode_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        start = time.perf_counter()
        with PeakMemory(dev) as train_peak:
            if mode == "zero-shot":
                checkpoint, trained = None, False
            else:
                checkpoint, trained = _train(
                    mode, base, data_dir, mode_dir, steps, seed, device,
                    base_model.image_size, overrides, log,
                )  # fmt: skip
        # a rerun that resumed or reused the training adds to what earlier runs measured
        train_seconds, train_mb = _training_cost(
            mode_dir, trained, time.perf_counter() - start, train_peak.megabytes
        )
        start = time.perf_counter()
        log(f"{mode}: tracking {len(sequences)} {split} sequence(s)")
        with PeakMemory(dev) as eval_peak:
            model = base_model if checkpoint is None else load_model(str(checkpoint), dev)
            metrics, annotation = _evaluate(
                model, sequences, mode_dir, seeding, annotate_tracks, iou_threshold,
                max_clicks, log,
            )  # fmt: skip
        records = _records(mode_dir)
        started = [r for r in records if r["type"] == "start"]
        total = sum(p.numel() for p in base_model.model.parameters())
        result = {
            "mode": mode,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "trainable_params": started[-1]["trainable"] if started else 0,
            "total_params": started[-1]["total_params"] if started else total,
            "steps": max((r["global_step"] for r in records if r["type"] == "step"), default=0),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start,
            "train_peak_mb": train_mb if checkpoint is not None else None,
            "eval_peak_mb": eval_peak.megabytes,
            "memory_kind": eval_peak.kind,
            "metrics": metrics,
            "annotation": annotation,
            "loss": _loss_curve(records),
        }
        _atomic_json(result_path, result)
        results[mode] = result
    summary = {"settings": settings, "environment": _environment(dev), "modes": results}
    _atomic_json(out / "compare.json", summary)
    plot_compare(summary, out / "compare.png")
    log(format_compare_table(summary))
    return summary
