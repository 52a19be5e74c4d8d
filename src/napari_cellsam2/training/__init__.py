"""Fine-tuning SAM 2 on cell time-lapses (LoRA or full), as a generator of events.

``train(cfg, cancel=...)`` is the entry point (see :mod:`.loop`); the config lives in
:mod:`.config`. The torch-heavy names are imported on first use so that reading or validating a
config stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import ConfigError, TrainConfig, load_config, to_dataclass, valid_keys

_LAZY = {
    "train": ".loop",
    "Trainer": ".loop",
    "TrainingError": ".loop",
    "last_checkpoint": ".loop",
    "CTCClipDataset": ".data",
    "StartEvent": ".events",
    "StepEvent": ".events",
    "EpochEvent": ".events",
    "ValidationEvent": ".events",
    "CheckpointEvent": ".events",
    "DoneEvent": ".events",
    "ErrorEvent": ".events",
    "Event": ".events",
}

__all__ = ["ConfigError", "TrainConfig", "load_config", "to_dataclass", "valid_keys", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
