"""Benchmark: how long the napari main thread is kept waiting while the dock's jobs run.

A real napari window (run under Xvfb) with the CellSAM2 dock, the synthetic mother-machine
sample and the tiny model. For each job, a 20 ms QTimer on the main thread
(:class:`~napari_cellsam2.widgets.responsiveness.MainThreadPing`) records how much longer than
20 ms each tick waited (wall time) and the main thread's CPU time between ticks:

  track      every GT cell of frame 0 seeded, tracked forward over the movie (+ lineage)
  retrack    one correction click on a later frame, tracked again
  train      LoRA fine-tuning from the layers (``--steps`` steps, one epoch, validation)
  export     the tracking layer written as CTC RES

``--load N`` starts N busy processes first, like a machine shared with other work. The issue's
budget is 200 ms; this script measures it (the main thread's CPU time and the wall time, which
machine load stretches). The test suite has no timed assertion: it checks that the model's work
never runs on the GUI thread (``tests/test_dock.py``) and that no GUI path waits for the image
encoder (``tests/test_dock_failsafe.py``).

Usage: xvfb-run -a python benchmarks/bench_dock.py [--repeats 3] [--load 0]
Prints a table and writes benchmarks/results/dock.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "dock.json"


def _spin() -> None:
    while True:
        pass


def wait_until(condition, timeout: float = 600.0) -> None:
    """Run the Qt event loop until ``condition()`` holds (no sleeping on the main thread)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop, timer, deadline = QEventLoop(), QTimer(), time.monotonic() + timeout

    def check() -> None:
        if condition() or time.monotonic() > deadline:
            loop.quit()

    timer.setInterval(10)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()
    if not condition():
        raise TimeoutError(f"gave up after {timeout:.0f} s")


def measure(job, widget) -> dict:
    from napari_cellsam2.widgets.responsiveness import MainThreadPing

    ping = MainThreadPing(freeze_gc=False)  # a fresh process: its heap is the app's own
    start = time.perf_counter()
    job()
    wait_until(lambda: not widget.state.busy)
    seconds = time.perf_counter() - start
    ping.stop()
    waits = np.array(ping.waits) * 1000
    return {
        "seconds": seconds,
        "ticks": len(waits),
        "worst_wall_ms": float(waits.max()) if len(waits) else 0.0,
        "p99_wall_ms": float(np.percentile(waits, 99)) if len(waits) else 0.0,
        "over_200ms": int((waits > 200).sum()),
        "worst_cpu_ms": ping.worst_cpu * 1000,
    }


def one_round(viewer, widget, steps: int, work: Path) -> dict[str, dict]:
    from napari_cellsam2.widgets import session_restart
    from napari_cellsam2.widgets.track_panel import LABELS_NAME

    track, train, export = widget.track_panel, widget.train_panel, widget.export_panel
    # rounds after the first start over the previous round's result: discard it, unasked
    session_restart.ask_about_results = lambda *args: session_restart.DISCARD
    track.image.select("mother machine")
    track.start_session()
    track.seed_layer.select("mother machine TRA")
    viewer.dims.set_current_step(0, 0)
    track.seed()
    wait_until(lambda: track.pending_previews == 0 and not widget.state.busy)
    track.direction.setCurrentText("forward")
    out = {"track": measure(track.track, widget)}

    labels = viewer.layers[LABELS_NAME]
    cell = int(np.unique(np.asarray(labels.data[0]))[1])
    ys, xs = np.nonzero(np.asarray(labels.data[10]) == cell)
    track.cell.setValue(cell)

    def retrack() -> None:
        if len(ys):
            track.prompts.points.add([10, ys.mean(), xs.mean()])
            wait_until(lambda: track.pending_previews == 0)
        track.track()

    out["retrack"] = measure(retrack, widget)

    train.image.select("mother machine")
    train.labels.select(LABELS_NAME)
    train.epochs.setValue(1)
    train.steps.setValue(steps)
    train.frames.setValue(3)
    train.log_dir.setText(str(work / "runs"))
    out["train"] = measure(train.start, widget)

    export.layer.select(LABELS_NAME)
    export.out.setText(str(work / f"res-{time.monotonic_ns()}" / "01_RES"))
    out["export"] = measure(lambda: export.export("res"), widget)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside napari")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import napari

    from napari_cellsam2.widgets import CellSAM2Widget

    hogs = [mp.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for hog in hogs:
        hog.start()
    try:
        viewer = napari.Viewer()
        viewer.open_sample("napari-cellsam2", "mother_machine")
        widget = CellSAM2Widget(viewer)
        viewer.window.add_dock_widget(widget, name="CellSAM2")
        widget.model_panel.add_spec("tiny")
        widget.model_panel.load("tiny")
        wait_until(lambda: widget.state.model is not None and not widget.state.busy)
        rounds = []
        with tempfile.TemporaryDirectory() as work:
            for r in range(args.repeats):
                rounds.append(one_round(viewer, widget, args.steps, Path(work)))
                print(f"round {r + 1}/{args.repeats} done")
        viewer.close()
    finally:
        for hog in hogs:
            hog.terminate()

    jobs = list(rounds[0])
    summary = {
        job: {
            "worst_wall_ms": max(r[job]["worst_wall_ms"] for r in rounds),
            "median_p99_wall_ms": float(np.median([r[job]["p99_wall_ms"] for r in rounds])),
            "ticks_over_200ms": sum(r[job]["over_200ms"] for r in rounds),
            "ticks": sum(r[job]["ticks"] for r in rounds),
            "worst_cpu_ms": max(r[job]["worst_cpu_ms"] for r in rounds),
            "median_seconds": float(np.median([r[job]["seconds"] for r in rounds])),
        }
        for job in jobs
    }
    print(
        f"\n{args.repeats} rounds, {args.load} busy processes beside napari, {os.cpu_count()} CPUs"
    )
    print(f"{'job':<8} {'s':>6} {'worst wall ms':>14} {'p99 wall ms':>12} {'>200 ms':>8} "
          f"{'worst CPU ms':>13}")  # fmt: skip
    for job, s in summary.items():
        print(
            f"{job:<8} {s['median_seconds']:6.1f} {s['worst_wall_ms']:14.0f} "
            f"{s['median_p99_wall_ms']:12.0f} {s['ticks_over_200ms']:>4}/{s['ticks']:<5} "
            f"{s['worst_cpu_ms']:11.0f}"
        )
    result = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "settings": vars(args),
        "summary": summary,
        "rounds": rounds,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
