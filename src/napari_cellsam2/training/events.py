"""What a training run reports, as plain dataclasses (the GUI plots them, the CLI prints them).

A run yields, in order: ``StartEvent``; per step ``StepEvent``; per epoch ``EpochEvent``,
``ValidationEvent`` (when there is a validation set) and ``CheckpointEvent``; and exactly one
terminal event - ``DoneEvent`` (finished or cancelled) or ``ErrorEvent`` (stopped by a failure
during training; the last good checkpoint is kept and named). Problems found before training
starts (bad config, missing data, nothing to resume) raise instead of yielding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "VALIDATION_SCORES",
    "CheckpointEvent",
    "DoneEvent",
    "EpochEvent",
    "ErrorEvent",
    "Event",
    "StartEvent",
    "StepEvent",
    "ValidationEvent",
    "event_record",
]


@dataclass(frozen=True)
class StartEvent:
    """Training is about to take its first step (model, data and optimizer are ready)."""

    log_dir: Path
    start_epoch: int  # 1-based epoch the run starts in (> 1 when resuming)
    start_step: int  # optimizer steps already done (> 0 when resuming)
    num_epochs: int
    steps_per_epoch: int
    total_steps: int
    trainable: int
    total_params: int
    mode: Literal["lora", "full"]
    device: str
    num_processes: int
    notes: tuple[str, ...] = ()  # what the user must know about the model (e.g. a new head)


@dataclass(frozen=True)
class StepEvent:
    epoch: int  # 1-based
    step: int  # 1-based within the epoch
    global_step: int  # 1-based over the whole run, continued on resume
    total_steps: int
    loss: float  # mean over processes
    parts: dict[str, float] = field(default_factory=dict)  # focal, dice, iou, obj, total
    lr: float = 0.0  # learning rate of the first parameter group after this step
    seconds: float = 0.0  # wall time of this step


@dataclass(frozen=True)
class EpochEvent:
    epoch: int
    train_loss: float  # mean step loss of the epoch (steps run in this session)


@dataclass(frozen=True)
class ValidationEvent:
    """Validation after an epoch (epoch 0: the base model, before the first step): the loss,
    and what tracking gets (eval mode, the kept output;
    the real tracking session scored as CTC, see :mod:`.tracking_validation`); the scores are
    None where they were not measured (no GT movie, or turned off)."""

    epoch: int
    val_loss: float
    parts: dict[str, float] = field(default_factory=dict)
    val_kept_iou: float | None = None
    val_TRA: float | None = None  # CTC metric names, as in metrics.jsonl
    val_SEG: float | None = None
    val_DET: float | None = None
    val_LNK: float | None = None
    val_BC0: float | None = None  # BC(0), where the validation GT has divisions

    def rank(self) -> tuple[float, float, float]:
        """Order for picking the best checkpoint: ``val_TRA``, then ``val_kept_iou``, then the
        lower loss (missing scores rank lowest)."""

        def score(value: float | None) -> float:
            return -1.0 if value is None else value

        loss = self.val_loss if math.isfinite(self.val_loss) else math.inf  # NaN never wins
        return (score(self.val_TRA), score(self.val_kept_iou), -loss)


# the scores a validation reports (the tracking-path and kept-IoU fields, in field order)
VALIDATION_SCORES = tuple(
    f.name for f in fields(ValidationEvent) if f.name.startswith("val_") and f.name != "val_loss"
)


@dataclass(frozen=True)
class CheckpointEvent:
    epoch: int
    path: Path  # folder loadable with ``load_model(path)``
    best: Path | None = None  # ``checkpoints/best``, when this epoch became the best one


@dataclass(frozen=True)
class DoneEvent:
    path: Path | None  # final checkpoint folder (None only if nothing was ever saved)
    cancelled: bool = False


@dataclass(frozen=True)
class ErrorEvent:
    """Training stopped early; ``checkpoint`` is the last good one (or None)."""

    kind: Literal["nan", "oom"]
    message: str
    checkpoint: Path | None = None
    epoch: int = 0
    global_step: int = 0


Event = (
    StartEvent | StepEvent | EpochEvent | ValidationEvent | CheckpointEvent | DoneEvent | ErrorEvent
)

_TYPES = {
    StartEvent: "start",
    StepEvent: "step",
    EpochEvent: "epoch",
    ValidationEvent: "validation",
    CheckpointEvent: "checkpoint",
    DoneEvent: "done",
    ErrorEvent: "error",
}


def event_record(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of an event with its ``type`` (one line of ``metrics.jsonl``)."""
    record: dict[str, Any] = {"type": _TYPES[type(event)]}
    for key, value in asdict(event).items():
        record[key] = str(value) if isinstance(value, Path) else value
    return record
