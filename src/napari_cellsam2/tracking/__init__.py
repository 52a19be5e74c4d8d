"""Prompt-and-propagate cell tracking with SAM 2 (headless; Qt-free).

The torch-heavy names are imported on first use, so that the CLI can build its options from
:class:`DetectConfig` and the planner without loading torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .detect_config import DetectConfig
from .planner import DIRECTIONS, ObjectSpan, Pass, plan

_LAZY = {
    "compose_frame": ".compose",
    "resolve_overlaps": ".compose",
    "split_parts": ".compose",
    "Detection": ".detect",
    "detect_cells": ".detect",
    "NewCellTracking": ".new_cells",
    "track_with_new_cells": ".new_cells",
    "TrackingResult": ".export",
    "build_result": ".export",
    "BoxPrompt": ".prompts",
    "MaskPrompt": ".prompts",
    "PointPrompt": ".prompts",
    "Prompt": ".prompts",
    "MAX_OBJECT_ID": ".session",
    "FrameResult": ".session",
    "Propagation": ".session",
    "PropagationInterrupted": ".session",
    "SessionSnapshot": ".session",
    "TrackingSession": ".session",
}

__all__ = ["DIRECTIONS", "DetectConfig", "ObjectSpan", "Pass", "plan", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
