"""The fine-tuning loop: a generator of events that the CLI, the napari dock and scripts consume.

``train(cfg)`` yields :mod:`.events` while it trains SAM 2 on CTC clips; the caller decides how to
show them (progress bar, plot, log). It can be cancelled between steps (a clean checkpoint is
saved), resumes exactly where the last checkpoint left off, and runs data-parallel under
``accelerate launch`` (see ``python -m napari_cellsam2.training``).

Optimisation: AdamW over the parameter groups of :mod:`.params`, gradient-norm clipping at
``scratch.grad_clip``, learning rate ``lr * f(step)`` with a linear warm-up over the first 5 % of
the steps followed by a cosine decay to ``min_lr_ratio * lr`` at the last step. bf16 autocast on
CUDA when ``scratch.amp``; fp32 elsewhere. Every epoch starts from RNG states derived from
``scratch.seed`` and the epoch number (data order, augmentation, prompt sampling), so a resumed
run sees the same data as an uninterrupted one.

Resolution: SAM 2 weights do not depend on the input size, so a model whose ``image_size``
differs from ``scratch.resolution`` is rebuilt at ``scratch.resolution`` with the same weights
(:mod:`napari_cellsam2.model.resolution`); checkpoints record that size, so tracking with the
fine-tuned model runs at the size it was trained at.

Log directory (``launcher.experiment_log_dir``)::

    config.yaml                 resolved configuration of the latest run
    metrics.jsonl               one JSON object per event (type: start/step/epoch/validation/...)
    checkpoints/epoch_001/      model (full) or adapter (LoRA) + train_state.pt/.json, per epoch
    checkpoints/step_000005/    written on cancel mid-epoch (removed once a later epoch is saved)
    checkpoints/last.json       {"checkpoint": "epoch_002", ...}: the newest, replaced atomically
    checkpoints/best/           a copy of the best epoch so far (by val_TRA, then val_kept_iou,
                                then validation loss), without the optimizer state, with its
                                best.json ({"epoch": 2, "val_TRA": ..., ...}) inside: folder and
                                record are swapped in together

Validation (each epoch, with a validation set) measures the loss, ``val_kept_iou`` (eval mode:
the IoU of the multimask output tracking keeps) and, on movies with GT, ``val_TRA``/``val_SEG``/
``val_DET``/``val_LNK``/``val_BC0`` of the real tracking session (:mod:`.tracking_validation`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler

from ..ctc.writer import atomic_write_text, keep_copy, read_json_record
from ..model.device import resolve_device, training_kernels
from ..model.heads import (
    attach_centre_head,
    attach_division_head,
    centre_head,
    division_head,
    heads_of,
    load_heads,
)
from ..model.resolution import with_image_size
from ..tracking.division_config import DIVISION_MODES
from .config import MODEL_DEFAULT_DIVISIONS, ScratchConfig, TrainConfig, to_dataclass
from .data import ClipBatch, collate_clips
from .events import (
    CheckpointEvent,
    DoneEvent,
    EpochEvent,
    ErrorEvent,
    Event,
    StartEvent,
    StepEvent,
    ValidationEvent,
    event_record,
)
from .forward import unwrap_model
from .params import (
    apply_lora,
    build_param_groups,
    count_parameters,
    freeze_encoder,
    train_extra_parameters,
)
from .prompts import check_corrections, check_prompt_mix

__all__ = [
    "Objective",
    "Trainer",
    "TrainingError",
    "best_record",
    "epoch_scratch",
    "last_checkpoint",
    "lr_factor",
    "train",
]

Objective = Callable[
    [nn.Module, ClipBatch, ScratchConfig, torch.Generator | None],
    tuple[torch.Tensor, dict[str, float]],
]
Cancel = Callable[[], bool] | threading.Event | None

CHECKPOINTS = "checkpoints"
LAST = "last.json"
BEST = "best"
BEST_JSON = "best.json"
TRAIN_STATE = "train_state.pt"
TRAIN_META = "train_state.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
WARMUP_FRACTION = 0.05


class TrainingError(RuntimeError):
    """A problem that stops training before it starts (nothing to resume, mismatched run...)."""


def lr_factor(step: int, total: int, min_ratio: float, warmup: int) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def read_record(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON record the engine wrote (``last.json``, ``train_state.json``, ``best.json``) with
    at least ``keys``; a missing or damaged one is a :class:`TrainingError` that names it."""
    try:
        return read_json_record(path, keys)
    except ValueError as err:
        raise TrainingError(str(err)) from err
    except OSError as err:
        raise TrainingError(f"{path}: {err.strerror or err}") from err


def last_checkpoint(log_dir: str | Path) -> Path | None:
    """The newest checkpoint folder of a training log directory, or None."""
    pointer = Path(log_dir) / CHECKPOINTS / LAST
    if not pointer.is_file():
        return None
    folder = pointer.parent / str(read_record(pointer, ("checkpoint",))["checkpoint"])
    return folder if folder.is_dir() else None


def best_record(ckpt_dir: Path) -> dict[str, Any] | None:
    """The validation record of ``ckpt_dir/best`` (its epoch and scores), or None without one.

    It is read from inside the folder, which carries it since both were swapped in together; a
    ``best/`` of a run from before that (no record inside) falls back on the
    ``ckpt_dir/best.json`` such runs wrote beside it."""
    best = ckpt_dir / BEST
    if not best.is_dir():
        return None
    for pointer in (best / BEST_JSON, ckpt_dir / BEST_JSON):
        if pointer.is_file():
            return read_record(pointer, ("epoch", "val_loss"))
    return None


def train(
    cfg: DictConfig | TrainConfig,
    *,
    cancel: Cancel = None,
    dataset: Dataset | None = None,
    val_dataset: Dataset | None = None,
    objective: Objective | None = None,
) -> Iterator[Event]:
    """Train with ``cfg`` and yield events; see :class:`Trainer`."""
    return Trainer(cfg, dataset=dataset, val_dataset=val_dataset, objective=objective).run(cancel)


def _seed(*parts: int | str) -> int:
    """A 32-bit seed mixed from integers and short labels (stable across runs and processes)."""
    words = [p if isinstance(p, int) else int.from_bytes(p.encode()[:8], "little") for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def epoch_scratch(sc: ScratchConfig, epoch: int) -> ScratchConfig:
    """The options one epoch trains with: during the first ``scratch.mask_prompt_epochs`` epochs
    every object is prompted with its GT mask and gets no correction clicks (a curriculum: a model
    trained from random weights first learns to track through memory; clicks come later); during
    the first ``scratch.memory_from_gt_epochs`` its memory holds the GT masks (teacher forcing)."""
    if epoch <= sc.memory_from_gt_epochs:
        sc = replace(sc, memory_from_gt=True)
    if epoch > sc.mask_prompt_epochs:
        return sc
    return replace(sc, prob_point=0.0, prob_box=0.0, prob_mask=1.0, num_correction_pt_per_frame=0)


def _cancel_fn(cancel: Cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return cancel
    raise TypeError(f"cancel must be a callable or threading.Event, got {type(cancel).__name__}")


def _check_scratch(sc: ScratchConfig) -> None:
    positive = ("num_epochs", "num_frames", "batch_size", "max_num_objects", "resolution")
    for name in positive:
        if getattr(sc, name) < 1:
            raise ValueError(f"scratch.{name} must be >= 1, got {getattr(sc, name)}")
    for name in ("steps_per_epoch", "val_steps", "val_tracking_frames"):
        if getattr(sc, name) is not None and getattr(sc, name) < 1:
            raise ValueError(f"scratch.{name} must be >= 1 or null, got {getattr(sc, name)}")
    if not 0.0 <= sc.min_lr_ratio <= 1.0:
        raise ValueError(f"scratch.min_lr_ratio must be in [0, 1], got {sc.min_lr_ratio}")
    if sc.resolution % 32:
        raise ValueError(f"scratch.resolution must be a multiple of 32, got {sc.resolution}")
    if sc.seed < 0:
        raise ValueError(f"scratch.seed must be >= 0, got {sc.seed}")
    if sc.val_tracking_sequences is not None and sc.val_tracking_sequences < 0:
        raise ValueError(
            f"scratch.val_tracking_sequences must be >= 0 or null, got {sc.val_tracking_sequences}"
        )
    if sc.mask_prompt_epochs < 0:
        raise ValueError(f"scratch.mask_prompt_epochs must be >= 0, got {sc.mask_prompt_epochs}")
    if sc.heads_only and (sc.use_lora or not (sc.pred_div_scores or sc.pred_heatmap)):
        raise ValueError(
            "scratch.heads_only needs full mode (scratch.use_lora=false) and a head to train "
            "(scratch.pred_div_scores or scratch.pred_heatmap)"
        )
    if sc.val_divisions not in (*DIVISION_MODES, MODEL_DEFAULT_DIVISIONS):
        raise ValueError(
            f"scratch.val_divisions must be one of {(*DIVISION_MODES, MODEL_DEFAULT_DIVISIONS)}, "
            f"got {sc.val_divisions!r}"
        )
    if sc.mother_covers_daughters and sc.pred_div_scores:
        raise ValueError(
            "scratch.mother_covers_daughters is for models without the division head: with "
            "scratch.pred_div_scores the mother's decode is the division and she stops there"
        )
    if not 0.0 <= sc.div_clip_fraction < 1.0:
        raise ValueError(f"scratch.div_clip_fraction must be in [0, 1), got {sc.div_clip_fraction}")
    check_prompt_mix(sc.prob_point, sc.prob_box, sc.prob_mask)  # before anything is written
    check_corrections(
        sc.num_correction_pt_per_frame, sc.prob_correction_from_gt, sc.num_frames_to_correct
    )


def _trainable_settings(sc: ScratchConfig) -> dict[str, Any]:
    """The options that decide which parameters train (they must not change on resume)."""
    if sc.use_lora:
        return {
            "lora_rank": sc.lora_rank,
            "lora_alpha": sc.lora_alpha,
            "lora_dropout": sc.lora_dropout,
            "lora_targets": list(sc.lora_targets),
            "lora_modules_to_save": list(sc.lora_modules_to_save),
        }
    return {"freeze_encoder": sc.freeze_encoder}


def _val_clips(count: int, val_steps: int | None, batch_size: int) -> list[int]:
    """Validation clip indices: all, or ``val_steps`` batches of evenly spaced clips (the same
    every epoch, spread over all sequences rather than the first one)."""
    wanted = count if val_steps is None else min(count, val_steps * batch_size)
    return sorted({int(i) for i in np.linspace(0, count - 1, wanted).round()})


class _ObjectiveModule(nn.Module):
    """Routes the objective through ``forward`` so DistributedDataParallel sees a forward pass."""

    def __init__(self, net: nn.Module, objective: Objective, scratch: ScratchConfig) -> None:
        super().__init__()
        self.net = net
        self.objective = objective
        self.scratch = scratch

    @property
    def sam(self) -> nn.Module:
        """The Sam2VideoModel itself (LoRA layers are injected into it in place)."""
        return unwrap_model(self.net)

    def forward(
        self, batch: ClipBatch, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.sam, batch, self.scratch, generator)


@dataclass(frozen=True)
class _ResumePoint:
    folder: Path
    epoch: int  # completed epochs
    step_in_epoch: int  # steps done in the next epoch (> 0 after a cancel mid-epoch)
    global_step: int
    epoch_losses: tuple[float, ...] = ()  # the losses of those steps, for the epoch's mean


class Trainer:
    """One training run of ``cfg``; :meth:`run` yields the events.

    ``dataset``/``val_dataset`` replace the clip datasets built from ``cfg.dataset`` (the napari
    dock trains on in-memory corrections); when ``dataset`` is given without ``val_dataset`` there
    is no validation. ``objective`` replaces :func:`.objective.clip_loss` (for tests).
    Nothing happens until the first event is requested; errors found before the first step
    raise (:class:`TrainingError`, ``ValueError``, the data module's errors), failures during
    training end the stream with an :class:`~.events.ErrorEvent`.
    """

    def __init__(
        self,
        cfg: DictConfig | TrainConfig,
        *,
        dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        objective: Objective | None = None,
    ) -> None:
        self.cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
        self.conf: TrainConfig = to_dataclass(self.cfg)
        self.scratch = self.conf.scratch
        self.log_dir = Path(self.conf.launcher.experiment_log_dir)
        self.ckpt_dir = self.log_dir / CHECKPOINTS
        self._train_set = dataset
        self._val_set = val_dataset
        self._objective = objective
        self._wandb: Any = None
        self._metrics: Any = None
        self._best: ValidationEvent | None = None  # set by _setup (see _best_so_far)
        self._resume_rng: list[dict[str, Any]] | None = None  # saved by a mid-epoch checkpoint

    # ------------------------------------------------------------------ public
    def run(self, cancel: Cancel = None) -> Iterator[Event]:
        """Train; yield StartEvent, StepEvent..., per epoch EpochEvent/ValidationEvent/
        CheckpointEvent, and finally DoneEvent or ErrorEvent (see :mod:`.events`)."""
        is_cancelled = _cancel_fn(cancel)
        self._setup()
        try:
            yield from self._epochs(is_cancelled)
        finally:  # also when the consumer stops iterating
            if self._metrics is not None:
                self._metrics.close()
            if self._wandb is not None:
                self._wandb.finish()

    # ------------------------------------------------------------------- setup
    def _setup(self) -> None:
        """Everything that can fail for a bad config or bad data, before anything is written."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        sc = self.scratch
        _check_scratch(sc)
        device = resolve_device(self.conf.model.device)
        self.accelerator = acc = Accelerator(
            cpu=device.type == "cpu",
            device_placement=False,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.device = acc.device if acc.num_processes > 1 else device
        self.resume = self._resume_point() if self.conf.launcher.resume else None
        if self.resume is None and (self.ckpt_dir / LAST).exists():
            raise TrainingError(
                f"{self.log_dir} already holds a training run; set launcher.resume=true to "
                "continue it or choose another launcher.experiment_log_dir"
            )
        if sc.use_wandb:  # every process: one that went on alone would hang the others
            try:
                import wandb  # noqa: F401
            except ImportError as err:
                raise TrainingError(
                    "scratch.use_wandb=true needs the wandb package (pip install wandb)"
                ) from err
        self._best = self._best_so_far()
        self._build_datasets()
        self._build_model()
        self._build_optimizer()

    def _best_so_far(self) -> ValidationEvent | None:
        """The validation of the run's best epoch, read once, before any process writes.

        Every process decides from this copy in memory whether an epoch is the new best: reading
        ``best.json`` at each epoch raced the main process writing it, so another process could
        skip the barrier in :meth:`_keep_best` and leave the main one waiting (a crash under
        ``accelerate launch``)."""
        old = best_record(self.ckpt_dir)  # the event_record of the best epoch
        if old is None:
            return None
        known = {f.name for f in fields(ValidationEvent)}
        return ValidationEvent(**{k: v for k, v in old.items() if k in known})

    def _resume_point(self) -> _ResumePoint:
        folder = last_checkpoint(self.log_dir)
        if folder is None:
            raise TrainingError(
                f"launcher.resume=true but there is nothing to resume in {self.log_dir}: "
                f"no {CHECKPOINTS}/{LAST} pointing at a checkpoint folder"
            )
        meta_path = folder / TRAIN_META
        if not meta_path.is_file() or not (folder / TRAIN_STATE).is_file():
            raise TrainingError(f"checkpoint {folder} has no {TRAIN_META}/{TRAIN_STATE}")
        meta = read_record(meta_path, ("mode", "base", "epoch", "step_in_epoch", "global_step"))
        mode = "lora" if self.scratch.use_lora else "full"
        if meta["mode"] != mode:
            raise TrainingError(
                f"cannot resume {folder}: it was trained in {meta['mode']} mode but "
                f"scratch.use_lora={self.scratch.use_lora}"
            )
        if meta["base"] != self.conf.model.base:
            raise TrainingError(
                f"cannot resume {folder}: it was trained from model.base={meta['base']!r}, "
                f"not {self.conf.model.base!r}"
            )
        now, saved = _trainable_settings(self.scratch), meta.get("trainable", {})
        changed = {k: (old, now[k]) for k, old in saved.items() if now[k] != old}
        if changed:
            raise TrainingError(
                f"cannot resume {folder}: what is trained changed since it was saved "
                + ", ".join(f"scratch.{k}: {a} -> {b}" for k, (a, b) in changed.items())
            )
        if meta["step_in_epoch"]:  # the steps to skip were counted in batches of processes
            now = {
                "num_processes": self.accelerator.num_processes,
                "batch_size": self.scratch.batch_size,
            }
            moved = {k: (meta[k], v) for k, v in now.items() if k in meta and meta[k] != v}
            if moved:
                raise TrainingError(
                    f"cannot resume {folder} in the middle of an epoch with other "
                    + ", ".join(f"{k} ({a} -> {b})" for k, (a, b) in moved.items())
                    + ": the clips it already used would be miscounted; resume with the "
                    "earlier setting (it can change at the next epoch checkpoint)"
                )
        if meta["epoch"] >= self.scratch.num_epochs:
            raise TrainingError(
                f"{folder} already completed {meta['epoch']} epoch(s) >= scratch.num_epochs="
                f"{self.scratch.num_epochs}; raise scratch.num_epochs to train further"
            )
        losses = tuple(float(x) for x in meta.get("epoch_losses", ()))
        return _ResumePoint(
            folder, meta["epoch"], meta["step_in_epoch"], meta["global_step"], losses
        )

    def _build_datasets(self) -> None:
        """Open the train/val clip datasets; the data module raises for missing/empty data."""
        if self._train_set is None:
            from .data import CTCClipDataset

            self._train_set = CTCClipDataset.from_config(self.conf, self.conf.dataset.train_split)
            if self.conf.dataset.val_split and self._val_set is None:
                self._val_set = CTCClipDataset.from_config(
                    self.conf, self.conf.dataset.val_split, augment=False
                )
        from .tracking_validation import pick_movies

        sc = self.scratch
        self._val_movies = []
        if self._val_set is not None and hasattr(self._val_set, "movies"):
            self._val_movies = pick_movies(self._val_set.movies(), sc.val_tracking_sequences)
        for what, data in (("training", self._train_set), ("validation", self._val_set)):
            if data is None:
                continue
            if len(data) == 0:
                raise ValueError(f"the {what} dataset holds no clips")
            for name in ("resolution", "num_frames"):  # a dataset built outside the config
                value = getattr(data, name, getattr(sc, name))
                if value != getattr(sc, name):
                    raise ValueError(
                        f"the {what} dataset has {name}={value} but scratch.{name}="
                        f"{getattr(sc, name)}; build it with the config's values"
                    )

    def _build_model(self) -> None:
        from ..model.loading import load_model

        sc = self.scratch
        torch.manual_seed(sc.seed)  # LoRA initialisation
        full_resume = self.resume is not None and not sc.use_lora
        spec = str(self.resume.folder) if full_resume else self.conf.model.base
        sam = with_image_size(load_model(spec, self.device).model, sc.resolution)
        if sc.use_lora and self.resume is not None:
            load_heads(sam, self.resume.folder)  # the heads trained so far, beside the adapter
        notes = []
        wanted = (
            (sc.pred_div_scores, division_head, attach_division_head, "division head",
             "divisions from the lineage of the training data"),
            (sc.pred_heatmap, centre_head, attach_centre_head, "cell-centre heatmap head",
             "where cells are from the training masks"),
        )  # fmt: skip
        for on, get, attach, name, learns in wanted:
            if on and get(sam) is None:
                attach(sam, seed=sc.seed)
                notes.append(f"{name}: freshly initialised ({spec} has none); it learns {learns}")
        self.notes = tuple(notes)
        if sc.use_lora:
            if self.resume is not None:
                from peft import PeftModel

                from ..model.checkpoint import load_trained_parameters

                net = PeftModel.from_pretrained(sam, self.resume.folder, is_trainable=True)
                net = train_extra_parameters(net, load_trained_parameters(net, self.resume.folder))
            else:
                net = apply_lora(sam, sc)
        else:
            net = sam
            if sc.freeze_encoder:
                freeze_encoder(net)
            if sc.heads_only:
                net.requires_grad_(False)
        for head in heads_of(net):  # small heads, trained in full (beside LoRA adapters too)
            head.requires_grad_(True)
        self.net = net.to(self.device)
        self.params = count_parameters(self.net)
        objective = self._objective
        if objective is None:
            from .objective import clip_loss

            objective = clip_loss
        self.module = _ObjectiveModule(self.net, objective, sc)

    def _division_sampler(self) -> WeightedRandomSampler | None:
        """With a division head, clips holding a division drawn with probability at least
        ``div_clip_fraction`` (one epoch = as many draws as clips); None: plain shuffling.
        Divisions are rare (3 % of tracked cell-frames in the synthetic mother machine), and a
        head trained on the natural mix learns to say "never"."""
        flags = getattr(self._train_set, "division_clips", None)
        target = self.scratch.div_clip_fraction
        if division_head(self.net) is None or flags is None or target <= 0:
            return None
        flags = torch.from_numpy(flags())
        count = int(flags.sum())
        if count == 0 or count == len(flags) or count / len(flags) >= target:
            return None
        weights = torch.where(flags, target / count, (1 - target) / (len(flags) - count))
        return WeightedRandomSampler(weights.double(), len(flags), generator=self._order)

    def _build_optimizer(self) -> None:
        sc, acc = self.scratch, self.accelerator
        groups = build_param_groups(self.net, sc)
        self.trainable = [p for g in groups for p in g["params"]]
        # torch's fused AdamW (CUDA and CPU kernels): one update per parameter group instead of
        # a dozen ops per parameter, and no host sync per parameter as the foreach path has
        optimizer = torch.optim.AdamW(groups, lr=max(g["lr"] for g in groups), fused=True)
        state = None
        if self.resume is not None:
            path = self.resume.folder / TRAIN_STATE
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # damaged bytes make the safe unpickler fail any way
                raise TrainingError(
                    f"{path} is not a readable training state ({type(err).__name__}: {err})"
                ) from err
            if not isinstance(state, dict) or not {"optimizer", "scheduler"} <= state.keys():
                raise TrainingError(f"{path} is not a training state of this engine")
            self._resume_rng = state.get("rng")
            try:
                optimizer.load_state_dict(state["optimizer"])
            except ValueError as err:
                raise TrainingError(
                    f"cannot resume {self.resume.folder}: its optimizer state does not match "
                    f"this configuration ({err}); did scratch.freeze_encoder or "
                    "scratch.lora_targets change?"
                ) from err
        self._order = torch.Generator()  # data order; reseeded every epoch
        sampler = self._division_sampler()
        loader = DataLoader(
            self._train_set,
            batch_size=sc.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=None if sampler is not None else self._order,
            collate_fn=collate_clips,
            num_workers=sc.num_workers,
        )
        self.module, self.optimizer, self.loader = acc.prepare(self.module, optimizer, loader)
        batches = len(self.loader)
        self.steps_per_epoch = min(batches, sc.steps_per_epoch or batches)
        self.total_steps = self.steps_per_epoch * sc.num_epochs
        warmup = int(WARMUP_FRACTION * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            partial(lr_factor, total=self.total_steps, min_ratio=sc.min_lr_ratio, warmup=warmup),
        )
        if state is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
            for group, base in zip(optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                group["lr"] = base * factor
        self.val_loader = None
        if self._val_set is not None:
            clips = _val_clips(len(self._val_set), sc.val_steps, sc.batch_size)
            self.val_loader = DataLoader(
                Subset(self._val_set, clips[acc.process_index :: acc.num_processes]),
                batch_size=sc.batch_size,
                collate_fn=collate_clips,
                num_workers=sc.num_workers,
            )

    # -------------------------------------------------------------------- loop
    def _start_logging(self) -> None:
        """Create the log directory contents (main process only)."""
        if not self.accelerator.is_main_process:
            return
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        config, text = self.log_dir / CONFIG, OmegaConf.to_yaml(self.cfg)
        if config.is_file() and config.read_text() != text:
            # not this run's: the user's own commented config, or one they edited to resume
            # from (`--config run/config.yaml launcher.resume=true`), kept beside it
            keep_copy(config)
        atomic_write_text(config, text)
        self._metrics = (self.log_dir / METRICS).open("a")
        if self.scratch.use_wandb:
            import wandb

            self._wandb = wandb
            wandb.init(
                project="napari-cellsam2",
                name=self.log_dir.name,
                dir=str(self.log_dir),
                config=OmegaConf.to_container(self.cfg),
                resume="allow" if self.resume else None,
            )

    def _emit(self, event: Event) -> Event:
        if self.accelerator.is_main_process:
            record = event_record(event)
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()
            if self._wandb is not None and isinstance(event, StepEvent | ValidationEvent):
                step = event.global_step if isinstance(event, StepEvent) else self.global_step
                values = {k: v for k, v in record.items() if isinstance(v, int | float)}
                values.update({f"parts/{k}": v for k, v in record.get("parts", {}).items()})
                self._wandb.log({f"{record['type']}/{k}": v for k, v in values.items()}, step=step)
        return event

    def _epochs(self, is_cancelled: Callable[[], bool]) -> Iterator[Event]:
        sc, acc = self.scratch, self.accelerator
        start = self.resume.epoch + 1 if self.resume else 1
        skip = self.resume.step_in_epoch if self.resume else 0
        self.global_step = self.resume.global_step if self.resume else 0
        self.last_saved: Path | None = self.resume.folder if self.resume else None
        self._start_logging()
        yield self._emit(
            StartEvent(
                log_dir=self.log_dir,
                start_epoch=start,
                start_step=self.global_step,
                num_epochs=sc.num_epochs,
                steps_per_epoch=self.steps_per_epoch,
                total_steps=self.total_steps,
                trainable=self.params.trainable,
                total_params=self.params.total,
                mode="lora" if sc.use_lora else "full",
                notes=self.notes,
                device=str(self.device),
                num_processes=acc.num_processes,
            )
        )
        if start == 1 and not skip and self.val_loader is not None and sc.validate_first:
            yield self._emit(self._validate(0))  # the base model: what fine-tuning must beat
        for epoch in range(start, sc.num_epochs + 1):
            self._seed_epoch(epoch)
            if skip:
                self._restore_rng_states()
            acc.unwrap_model(self.module).scratch = epoch_scratch(sc, epoch)
            loader = acc.skip_first_batches(self.loader, skip) if skip else self.loader
            # the epoch's mean train loss covers the steps before a mid-epoch resume too
            step, losses = skip, list(self.resume.epoch_losses) if skip else []
            for batch in islice(loader, max(0, self.steps_per_epoch - skip)):
                if is_cancelled():
                    acc.set_trigger()  # every process stops at the same step
                if acc.check_trigger():
                    path = self._save_partial(epoch, step, losses)
                    yield self._emit(DoneEvent(path, cancelled=True))
                    return
                try:
                    event = self._step(batch.to(self.device), epoch, step + 1)
                except torch.OutOfMemoryError:
                    yield self._emit(self._oom_event(epoch))
                    return
                if isinstance(event, ErrorEvent):
                    yield self._emit(event)
                    return
                step += 1
                losses.append(event.loss)
                yield self._emit(event)
            skip = 0
            yield self._emit(EpochEvent(epoch, float(np.mean(losses)) if losses else math.nan))
            validation = None
            if self.val_loader is not None:
                validation = self._validate(epoch)
                yield self._emit(validation)
            path = self._save(f"epoch_{epoch:03d}", epoch, 0)
            yield self._emit(CheckpointEvent(epoch, path, self._keep_best(path, validation)))
        yield self._emit(DoneEvent(self.last_saved, cancelled=False))

    def _seed_epoch(self, epoch: int) -> None:
        """Deterministic per-epoch RNG: the data order is the same on every process (the loader
        shards it); the data module seeds augmentation by (seed, epoch, clip); global RNGs
        (dropout) differ per process."""
        from accelerate.utils import set_seed

        set_seed(_seed(self.scratch.seed, "epoch", epoch), device_specific=True)
        self._order.manual_seed(_seed(self.scratch.seed, "order", epoch))
        if hasattr(self._train_set, "set_epoch"):
            self._train_set.set_epoch(epoch)

    def _autocast(self):
        return training_kernels(self.device, "auto" if self.scratch.amp else "fp32")

    def _reduce_parts(self, parts: dict[str, float]) -> dict[str, float]:
        """Each logged loss part averaged over the processes that report it.

        Processes may report different parts on the same step (``kept_iou`` exists only when
        some prediction held a cell, and each process draws its own prompts), so the parts are
        gathered as objects: a reduce of per-process tensors of different lengths is a
        collective mismatch that crashes the run."""
        from accelerate.utils import gather_object

        if self.accelerator.num_processes == 1:
            return dict(parts)
        merged: dict[str, list[float]] = {}
        for rank_parts in gather_object([parts]):
            for key, value in rank_parts.items():
                merged.setdefault(key, []).append(float(value))
        return {key: sum(values) / len(values) for key, values in sorted(merged.items())}

    def _step(self, batch: ClipBatch, epoch: int, step: int) -> StepEvent | ErrorEvent:
        acc = self.accelerator
        start = time.perf_counter()
        self.module.train()
        generator = torch.Generator().manual_seed(
            _seed(self.scratch.seed, "prompts", acc.process_index, self.global_step)
        )
        with self._autocast():
            loss, parts = self.module(batch, generator)
        mean_loss = float(acc.reduce(loss.detach().float(), "mean"))
        if not math.isfinite(mean_loss):
            return self._nan_event(epoch, f"loss is {mean_loss}")
        acc.backward(loss)
        max_norm = self.scratch.grad_clip if self.scratch.grad_clip > 0 else math.inf
        grad_norm = float(acc.clip_grad_norm_(self.trainable, max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._nan_event(epoch, f"gradient norm is {grad_norm}")
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return StepEvent(
            epoch=epoch,
            step=step,
            global_step=self.global_step,
            total_steps=self.total_steps,
            loss=mean_loss,
            parts=self._reduce_parts(parts),
            lr=lr,
            seconds=time.perf_counter() - start,
        )

    def _nan_event(self, epoch: int, what: str) -> ErrorEvent:
        kept = self.last_saved
        return ErrorEvent(
            kind="nan",
            message=(
                f"training stopped at step {self.global_step + 1}: {what}. "
                + (f"The last good checkpoint is {kept}." if kept else "No checkpoint was saved.")
                + " Try a lower learning rate or scratch.grad_clip, or check the data."
            ),
            checkpoint=kept,
            epoch=epoch,
            global_step=self.global_step,
        )

    def _oom_event(self, epoch: int) -> ErrorEvent:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        sc, kept = self.scratch, self.last_saved
        return ErrorEvent(
            kind="oom",
            message=(
                f"out of memory on {self.device} at step {self.global_step + 1}. Lower "
                f"scratch.max_num_objects (now {sc.max_num_objects}) first, then "
                f"scratch.num_frames (now {sc.num_frames}) or scratch.batch_size (now "
                f"{sc.batch_size}). "
                + (f"The last checkpoint is {kept}." if kept else "No checkpoint was saved.")
            ),
            checkpoint=kept,
            epoch=epoch,
            global_step=self.global_step,
        )

    @torch.no_grad()
    def _validate(self, epoch: int) -> ValidationEvent:
        """Mean loss over the validation clips: no augmentation, and prompts seeded by the clip
        index, so every epoch (and any number of processes) sees the same prompts."""
        from accelerate.utils import gather_object, set_seed

        acc, sc = self.accelerator, self.scratch
        self.module.eval()
        sam = acc.unwrap_model(self.module).sam
        objective = acc.unwrap_model(self.module).objective
        set_seed(_seed(sc.seed, "validation"), device_specific=True)
        clips = self.val_loader.dataset.indices
        loss_sum, seen, part_sums, part_seen = 0.0, 0, {}, {}
        for index, batch in enumerate(self.val_loader):
            generator = torch.Generator().manual_seed(
                _seed(sc.seed, "val", clips[index * sc.batch_size])
            )
            with self._autocast():
                loss, parts = objective(sam, batch.to(self.device), sc, generator)
            size = batch.pixel_values.shape[0]
            loss_sum += float(loss) * size
            seen += size
            for key, value in parts.items():  # a part may be missing from a batch (kept_iou)
                part_sums[key] = part_sums.get(key, 0.0) + float(value) * size
                part_seen[key] = part_seen.get(key, 0) + size
        # Processes may hold different numbers of clips (even none): gather plain objects.
        total, count, sums, counts = 0.0, 0, {}, {}
        mine = [(loss_sum, seen, part_sums, part_seen)]
        for rank_loss, rank_seen, rank_parts, rank_counts in gather_object(mine):
            total, count = total + rank_loss, count + rank_seen
            for key, value in rank_parts.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + rank_counts[key]
        parts = {key: value / counts[key] for key, value in sums.items()}
        tracking = self._tracking_scores(sam)
        return ValidationEvent(
            epoch=epoch,
            val_loss=total / count,
            parts=parts,
            val_kept_iou=parts.pop("kept_iou", None),
            **tracking,
        )

    def _tracking_scores(self, sam: nn.Module) -> dict[str, float]:
        """CTC scores of the real tracking session on the validation movies (main process; the
        others get the same numbers through ``broadcast_object_list``)."""
        from accelerate.utils import broadcast_object_list

        from .tracking_validation import tracking_scores

        if not self._val_movies:
            return {}
        scores: list[Any] = [None]
        if self.accelerator.is_main_process:
            precision = "auto" if self.scratch.amp else "fp32"
            divisions = self.scratch.val_divisions
            scores[0] = tracking_scores(
                sam,
                self._val_movies,
                self.scratch.val_tracking_frames,
                precision,
                None if divisions == MODEL_DEFAULT_DIVISIONS else divisions,
            )
        if self.accelerator.num_processes > 1:
            broadcast_object_list(scores)
        return scores[0]

    def _keep_best(self, path: Path, validation: ValidationEvent | None) -> Path | None:
        """Copy the epoch checkpoint to ``checkpoints/best`` when it ranks above the best so far
        (see :meth:`ValidationEvent.rank`); returns that folder, or None."""
        if validation is None:
            return None
        if self._best is not None and validation.rank() <= self._best.rank():
            return None
        self._best = validation
        best = self.ckpt_dir / BEST
        if self.accelerator.is_main_process:
            tmp = Path(tempfile.mkdtemp(prefix=".best.", dir=self.ckpt_dir))
            record = {k: v for k, v in event_record(validation).items() if k != "type"}
            text = json.dumps(record, indent=2)
            try:
                # the record goes in with the folder: a stop between the two renames leaves no
                # best/ (the next validated epoch becomes best), never a best/ of another epoch
                shutil.copytree(path, tmp / BEST, ignore=shutil.ignore_patterns(TRAIN_STATE))
                (tmp / BEST / BEST_JSON).write_text(text)
                if best.exists():
                    os.replace(best, tmp / "old")
                os.replace(tmp / BEST, best)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return best

    # ------------------------------------------------------------- checkpoints
    def _save_partial(self, epoch: int, step_in_epoch: int, losses: list[float]) -> Path | None:
        """Checkpoint on cancel, unless nothing changed since the last one; ``losses``: the
        epoch's step losses so far, for its mean after a resume."""
        if self.last_saved is not None and step_in_epoch == 0:
            return self.last_saved
        name = f"step_{self.global_step:06d}"
        return self._save(name, epoch - 1, step_in_epoch, losses)

    def _save(
        self, name: str, epochs_done: int, step_in_epoch: int, losses: Sequence[float] = ()
    ) -> Path:
        """Write ``checkpoints/name`` atomically and point ``last.json`` at it."""
        acc = self.accelerator
        folder = self.ckpt_dir / name
        # mid-epoch, the RNG states (dropout) of every process go along: a resumed epoch then
        # draws what the uninterrupted one would (an epoch's start reseeds them anyway)
        rng = self._gathered_rng_states() if step_in_epoch else None
        acc.wait_for_everyone()
        if acc.is_main_process:
            self._write_checkpoint(folder, epochs_done, step_in_epoch, rng, losses)
        acc.wait_for_everyone()
        self.last_saved = folder
        return folder

    def _gathered_rng_states(self) -> list[dict[str, Any]]:
        """Each process's global torch RNG states, in process order (a collective)."""
        from accelerate.utils import gather_object

        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        mine = {"cpu": torch.get_rng_state(), "cuda": cuda}
        return gather_object([mine]) if self.accelerator.num_processes > 1 else [mine]

    def _restore_rng_states(self) -> None:
        """Back to the RNG states a mid-epoch checkpoint saved (same number of processes)."""
        states = self._resume_rng or []
        if len(states) != self.accelerator.num_processes:
            return
        own = states[self.accelerator.process_index]
        torch.set_rng_state(own["cpu"])
        if own["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(own["cuda"])

    def _write_checkpoint(
        self,
        folder: Path,
        epochs_done: int,
        step_in_epoch: int,
        rng: list[dict[str, Any]] | None = None,
        losses: Sequence[float] = (),
    ) -> None:
        from ..model.checkpoint import save_adapter_checkpoint, save_model_checkpoint

        acc, sc = self.accelerator, self.scratch
        net = acc.unwrap_model(self.module).net
        meta = {
            "epoch": epochs_done,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "mode": "lora" if sc.use_lora else "full",
            "base": self.conf.model.base,
            "resolution": sc.resolution,
            "trainable": _trainable_settings(sc),
            "num_processes": acc.num_processes,
            "batch_size": sc.batch_size,
            "seed": sc.seed,
            "epoch_losses": [float(x) for x in losses] if step_in_epoch else [],
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=self.ckpt_dir))
        try:
            target = tmp / "ckpt"
            if sc.use_lora:
                save_adapter_checkpoint(net, target, self.conf.model.base, {"training": meta})
            else:
                save_model_checkpoint(net, target, {"training": meta}, self.conf.model.base)
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    **({"rng": rng} if rng else {}),
                },
                target / TRAIN_STATE,
            )
            (target / TRAIN_META).write_text(json.dumps(meta, indent=2))
            old = None
            if folder.exists():
                old = tmp / "old"
                os.replace(folder, old)
            os.replace(target, folder)
            pointer = {"checkpoint": folder.name, **meta}
            atomic_write_text(self.ckpt_dir / LAST, json.dumps(pointer, indent=2))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if folder.name.startswith("epoch_"):
            for stale in self.ckpt_dir.glob("step_*"):
                shutil.rmtree(stale, ignore_errors=True)
