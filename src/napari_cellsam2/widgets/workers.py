"""Helpers for the dock's background workers."""

from __future__ import annotations

import contextlib
import os
import sys
import threading


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
