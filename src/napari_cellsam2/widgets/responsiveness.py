"""A probe of how long the Qt main thread keeps events waiting (benchmarks/bench_dock.py)."""

from __future__ import annotations

import gc
import time

from qtpy.QtCore import QTimer


class MainThreadPing:
    """A timer on the Qt main thread that records, between two of its ticks, how much longer
    than its interval it was kept waiting (wall time) and how much CPU time the main thread
    spent meanwhile.

    CPU time is what GUI-thread work costs; wall time also counts the moments a loaded
    machine deschedules the process and waits that use no CPU (a lock, a sleep, file I/O).
    ``freeze_gc`` moves the objects that exist at the start out of the garbage collector's
    reach while measuring, so a long-lived process (a test session) does not charge an
    automatic full collection of its earlier objects to the code under test.
    """

    def __init__(self, interval_ms: int = 20, freeze_gc: bool = True) -> None:
        self.interval = interval_ms / 1000
        self.frozen = freeze_gc
        if freeze_gc:
            gc.collect()
            gc.freeze()
        self.waits: list[float] = []
        self.worst_cpu = 0.0
        self._last, self._last_cpu = time.perf_counter(), time.thread_time()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.waits.append(max(0.0, now - self._last - self.interval))
        self.worst_cpu = max(self.worst_cpu, cpu - self._last_cpu)
        self._last, self._last_cpu = now, cpu

    @property
    def worst_wall(self) -> float:
        return max(self.waits, default=0.0)

    def stop(self) -> MainThreadPing:
        self.timer.stop()
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
        return self
