"""Console training: ``python -m napari_cellsam2.training key=value ... [--config FILE.yaml]``.

The same runner serves ``cellsam2 train`` and ``cellsam2-train``; under
``accelerate launch -m napari_cellsam2.training ...`` every process runs it and only the main
process prints. Ctrl-C once cancels cleanly after the current step (a checkpoint is saved);
a second Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["add_train_arguments", "console_train", "main"]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. launcher.experiment_log_dir=runs/a scratch.num_epochs=2",
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config (overrides win)")
    return parser


def _install_sigint(cancel: threading.Event):
    """First Ctrl-C requests a clean stop; the second one interrupts as usual."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling after this step (Ctrl-C again to abort) ...", file=sys.stderr)

    return signal.signal(signal.SIGINT, handler)


def _quiet(*args, **kwargs) -> None:
    """print() for the non-main processes of a distributed run."""


def console_train(overrides: Sequence[str], config_file: str | None = None) -> int:
    """Load the config, train with a progress bar; 0 = done or cancelled, 1 = stopped by an
    error event (NaN loss, out of memory). Config/data errors propagate to the caller."""
    from accelerate import PartialState
    from tqdm import tqdm

    from .config import load_config
    from .events import (
        VALIDATION_SCORES,
        CheckpointEvent,
        DoneEvent,
        EpochEvent,
        ErrorEvent,
        StartEvent,
        StepEvent,
        ValidationEvent,
    )
    from .loop import train
    from .params import ParamCount

    cfg = load_config(list(overrides), config_file)
    cancel = threading.Event()
    previous = _install_sigint(cancel)
    say, bar = print, None
    best_epoch: int | None = None
    epoch_line: dict[int, str] = {}
    try:
        for event in train(cfg, cancel=cancel):
            if isinstance(event, StartEvent):
                # only now is the (possibly distributed) process state known
                main = PartialState().is_main_process
                say = print if main else _quiet
                say(
                    f"{event.mode} fine-tuning of {cfg.model.base} on {event.device} "
                    f"({event.num_processes} process(es)): "
                    f"{ParamCount(event.trainable, event.total_params)}"
                )
                say(f"log dir {event.log_dir}; epochs {event.start_epoch}..{event.num_epochs}")
                for note in event.notes:
                    say(note)
                bar = tqdm(
                    total=event.total_steps, initial=event.start_step, disable=not main, unit="step"
                )
            elif isinstance(event, StepEvent):
                bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.4f}", lr=f"{event.lr:.2e}")
                bar.update(1)
            elif isinstance(event, EpochEvent):
                epoch_line[event.epoch] = f"epoch {event.epoch}: train loss {event.train_loss:.4f}"
            elif isinstance(event, ValidationEvent):
                scores = f"val loss {event.val_loss:.4f}" + "".join(
                    f", {name} {value:.3f}"
                    for name in VALIDATION_SCORES
                    if (value := getattr(event, name)) is not None
                )
                if event.epoch == 0 and not bar.disable:
                    bar.write(f"base model: {scores}")
                elif event.epoch:
                    epoch_line[event.epoch] += f", {scores}"
            elif isinstance(event, CheckpointEvent):
                best_epoch = event.epoch if event.best else best_epoch
                if not bar.disable:
                    note = " (best so far)" if event.best else ""
                    bar.write(f"{epoch_line.pop(event.epoch, '')} -> {event.path}{note}")
            elif isinstance(event, DoneEvent | ErrorEvent):
                if bar is not None:
                    bar.close()
                if isinstance(event, ErrorEvent):
                    print(f"error: {event.message}", file=sys.stderr)
                    return 1
                say(f"{'cancelled' if event.cancelled else 'done'}; checkpoint: {event.path}")
                if best_epoch is not None and event.path is not None:
                    say(f"best checkpoint: epoch {best_epoch}: {event.path.parent / 'best'}")
                return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_cellsam2.training ...``: the same as ``cellsam2 train ...``."""
    from ..cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
