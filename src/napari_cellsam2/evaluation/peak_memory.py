"""Peak memory of a block of work: what the comparison reports per mode and phase.

On CUDA it is ``torch.cuda.max_memory_allocated`` (tensors only, reset at the start of the
block). Elsewhere it is the process's resident set size sampled every ``interval`` seconds by a
background thread (psutil): it includes everything the process holds (libraries, what earlier
blocks left allocated), so compare it between blocks of the same process only.
"""

from __future__ import annotations

import threading
from types import TracebackType

import torch

__all__ = ["PeakMemory"]


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.megabytes`` and ``peak.kind``."""

    def __init__(self, device: torch.device | str, interval: float = 0.02) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "rss"
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def megabytes(self) -> float:
        return self._peak / 2**20

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        while True:
            self._peak = max(self._peak, process.memory_info().rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        if self.kind == "rss":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            import psutil

            self._peak = max(self._peak, psutil.Process().memory_info().rss)
        else:
            self._peak = torch.cuda.max_memory_allocated(self.device)
