"""Helpers for the dock's background workers."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Generator
from typing import Any, TypeVar

R = TypeVar("R")


def yield_cpu_to_gui() -> None:
    """Keep the viewer fluid while a worker computes on the CPU.

    The worker thread gets a lower scheduling priority (Linux: per-thread nice; threads it
    starts inherit it), and PyTorch's CPU thread pool leaves one core to the Qt main thread:
    with as many busy OpenMP threads as cores, every small op waits on a descheduled thread and
    SAM 2 steps become many times slower (compare ``benchmarks/bench_training.py --threads 1``
    with ``--threads 2`` on a 2-core machine that has other work).
    """
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def until_cancelled(steps: Generator[Any, None, R], cancel: threading.Event):
    """Yield ``steps``' progress until ``cancel`` is set; return their result, or None when
    cancelled (after closing them, in this worker thread, so they clean up at once)."""
    while not cancel.is_set():
        try:
            yield next(steps)
        except StopIteration as stop:
            return stop.value
    steps.close()
    return None
