"""Prompt-and-propagate cell tracking with SAM 2 (headless; Qt-free)."""

from .compose import compose_frame, resolve_overlaps, split_parts
from .export import TrackingResult, build_result
from .planner import DIRECTIONS, ObjectSpan, Pass, plan
from .prompts import BoxPrompt, MaskPrompt, PointPrompt, Prompt
from .session import (
    MAX_OBJECT_ID,
    FrameResult,
    Propagation,
    PropagationInterrupted,
    SessionSnapshot,
    TrackingSession,
)

__all__ = [
    "DIRECTIONS",
    "MAX_OBJECT_ID",
    "BoxPrompt",
    "FrameResult",
    "MaskPrompt",
    "ObjectSpan",
    "Pass",
    "PointPrompt",
    "Prompt",
    "Propagation",
    "PropagationInterrupted",
    "SessionSnapshot",
    "TrackingResult",
    "TrackingSession",
    "build_result",
    "compose_frame",
    "plan",
    "resolve_overlaps",
    "split_parts",
]
