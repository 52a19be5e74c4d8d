"""Helpers for the dock's background workers."""

from __future__ import annotations

import contextlib
import os
import sys
import threading


def yield_cpu_to_gui() -> None:
    """Lower the calling worker thread's scheduling priority (Linux: per-thread nice), so that
    on a busy machine the Qt main thread still gets the CPU first and the viewer stays fluid.
    Threads the worker starts afterwards inherit it. Where it is not permitted, nothing changes."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
