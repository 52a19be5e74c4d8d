"""Time `evaluate_folders` (py-ctcmetrics) against sequence size, worker processes and metrics.

Usage: python benchmarks/bench_evaluation.py [--quick]
Prints a table and writes benchmarks/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_cellsam2.ctc import Lineage, write_gt, write_res
from napari_cellsam2.evaluation import DEFAULT_METRICS, evaluate_folders


def grid_cells(frames: int, size: int, per_side: int, seed: int = 0) -> np.ndarray:
    """Square cells on a jittering grid: every cell present on every frame, none touching."""
    rng = np.random.default_rng(seed)
    step = size // per_side
    half = max(2, step // 3)
    labels = np.zeros((frames, size, size), np.uint16)
    centres = np.stack(np.meshgrid(np.arange(per_side), np.arange(per_side)), -1).reshape(-1, 2)
    centres = centres * step + step // 2
    for t in range(frames):
        jitter = rng.integers(-step // 8, step // 8 + 1, centres.shape)
        for i, (y, x) in enumerate(centres + jitter):
            labels[t, y - half : y + half, x - half : x + half] = i + 1
    return labels


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sequences")
    args = parser.parse_args()
    # (frames, size, cells per side): moderate, CTC-like, and many cells (HOTA/CHOTA loops).
    cases = [(50, 256, 8), (100, 512, 16), (20, 512, 32)]
    if args.quick:
        cases = [(20, 128, 6), (40, 256, 10), (10, 256, 20)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames, size, side in cases:
            labels = grid_cells(frames, size, side)
            noisy = labels.copy()
            noisy[:, :, ::9] = 0  # thin stripes: imperfect IoU, same detections
            lineage = Lineage.from_labels(labels)
            root = Path(tmp) / f"{frames}x{size}"
            gt = write_gt(root / "gt", labels, lineage, seg_frames=list(range(0, frames, 10)))
            res = write_res(root / "res", noisy, Lineage.from_labels(noisy))
            case = f"{frames}x{size}^2, {side * side} cells"
            evaluate_folders(gt, res, ["TRA"], workers=1)  # warm-up: imports, file cache
            for workers in (1, 2, os.cpu_count() or 1):
                secs = timed(lambda: evaluate_folders(gt, res, workers=workers))  # noqa: B023
                rows.append({"case": case, "metrics": "default", "workers": workers, "s": secs})
            for extra in (["TRA"], ["HOTA"], ["CHOTA"], ["MOTA", "IDF1"], ["BC(1)", "CT", "TF"]):
                secs = timed(lambda: evaluate_folders(gt, res, extra, workers=1))  # noqa: B023
                rows.append({"case": case, "metrics": "+".join(extra), "workers": 1, "s": secs})
    print(f"{'case':<28} {'metrics':<14} {'workers':>7} {'seconds':>8}")
    for r in rows:
        print(f"{r['case']:<28} {r['metrics']:<14} {r['workers']:>7} {r['s']:>8.2f}")
    out = Path(__file__).parent / "results" / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "default_metrics": list(DEFAULT_METRICS)}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
