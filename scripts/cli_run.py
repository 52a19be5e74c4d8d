"""Run ``cellsam2`` in a child process, as a user would: the measurement scripts score what the
CLI gives (``demo_model_bars.py``, ``division_bars.py``), not a Python shortcut around it."""

from __future__ import annotations

import subprocess
import sys


def cellsam2(*args: str) -> str:
    """``cellsam2 ARGS`` with this interpreter; its stdout, or exit with its stderr on failure."""
    run = subprocess.run(
        [sys.executable, "-m", "napari_cellsam2.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode:
        raise SystemExit(f"cellsam2 {' '.join(args)} failed:\n{run.stderr}")
    return run.stdout
