"""What the dock's panels share: the viewer, the loaded model and the tracking session.

Panels talk through this object's signals instead of holding references to each other, so each
panel stays small and testable on its own.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal
from superqt.utils import FunctionWorker, GeneratorWorker


class JobFailed(Exception):
    """A RuntimeError (out of memory, an interrupted propagation, ...) raised by a generator
    job. superqt takes a RuntimeError from a generator for a deleted worker and ends it without
    an error or ``finished``: the dock would stay busy for good and say nothing."""


def _runtime_errors_reported(func: Callable[..., Generator]) -> Callable[..., Generator]:
    @functools.wraps(func)
    def steps(*args: Any) -> Generator:
        try:
            return (yield from func(*args))
        except RuntimeError as exc:
            raise JobFailed(str(exc)) from exc

    return steps


class DockState(QObject):
    """Shared state of one CellSAM2 dock."""

    model_changed = Signal(object)  # LoadedModel
    busy_changed = Signal(bool)  # a long job (load, track, train) started or ended
    request_model = Signal(str)  # a panel asks the model panel to load this spec

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.model: Any = None  # napari_cellsam2.model.loading.LoadedModel
        self._jobs = 0
        self._workers: set[Any] = set()  # running workers, kept alive until they finish
        self._ordered: deque[Any] = deque()  # ordered jobs: the running one, then the queued

    @property
    def busy(self) -> bool:
        """True while any background job of the dock runs."""
        return self._jobs > 0

    def set_model(self, model: Any) -> None:
        self.model = model
        self.model_changed.emit(model)

    def set_busy(self, busy: bool) -> None:
        """A job starts (True) or ends (False); overlapping jobs are counted."""
        was = self.busy
        self._jobs = max(0, self._jobs + (1 if busy else -1))
        if self.busy != was:
            self.busy_changed.emit(self.busy)

    def run_job(
        self,
        func: Callable,
        *args: Any,
        on_return: Callable | None = None,
        on_yield: Callable | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        on_finish: Callable[[], Any] | None = None,
        busy: bool = True,
        ordered: bool = False,
    ) -> Any:
        """Run ``func(*args)`` (a function or generator) in a napari worker thread.

        Results, yields, errors and the end come back on the Qt main thread. An error reaches
        ``on_error`` only (default: one notification): napari's own workers would also relay
        it as a second notification with a traceback, and re-raise it in the main thread.
        ``busy`` jobs are counted in :attr:`busy` from now until they finish (after
        ``on_finish``, so a follow-up job started there keeps the dock busy without a gap).
        A ``UserWarning`` raised in the job (e.g. "result has no tracks") is shown once as a
        napari warning; superqt's workers only emit it, and library deprecation noise is not
        the user's business. ``ordered`` jobs run one at a time, in the order they were asked
        for: the track panel sends every change of its session this way, so the main thread
        never has to wait for the session lock a worker holds, and a click's preview never
        overtakes the click.
        """
        kind = FunctionWorker
        if inspect.isgeneratorfunction(func):
            kind, func = GeneratorWorker, _runtime_errors_reported(func)
        handle_error = on_error or (lambda exc: show_error(str(exc)))
        worker = create_worker(
            func, *args, _start_thread=False, _worker_class=kind, _connect={"errored": handle_error}
        )
        worker.warned.connect(_user_warnings_relay())
        if on_return is not None:
            worker.returned.connect(on_return)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        if on_finish is not None:
            worker.finished.connect(on_finish)
        worker.finished.connect(lambda: self._workers.discard(worker))
        if busy:
            worker.finished.connect(lambda: self.set_busy(False))
            self.set_busy(True)
        self._workers.add(worker)
        if ordered:
            worker.finished.connect(self._start_next_ordered)
            self._ordered.append(worker)
            if len(self._ordered) > 1:
                return worker  # starts when the jobs before it have finished
        worker.start()
        return worker

    def _start_next_ordered(self) -> None:
        self._ordered.popleft()
        if self._ordered:
            self._ordered[0].start()


def _user_warnings_relay() -> Callable[[tuple], None]:
    """A slot for a worker's ``warned`` signal (``warnings.showwarning``'s arguments): each
    distinct ``UserWarning`` of the job becomes one napari warning notification."""
    shown: set[str] = set()

    def relay(args: tuple) -> None:
        from napari.utils.notifications import notification_manager

        message, category = args[0], args[1]
        if issubclass(category, UserWarning) and str(message) not in shown:
            shown.add(str(message))
            notification_manager.receive_warning(*args)

    return relay
