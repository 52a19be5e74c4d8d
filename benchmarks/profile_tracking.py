"""Where a tracked frame's time goes: host (Python, preprocessing, launches) or device.

Issue 12 asks the tracker to beat Meta's predictor by 1.5x with one object, where it is 0.68x
today. Throughput alone does not say why. This tracks ``--frames`` synthetic frames with the
random sam2.1-hiera-tiny architecture (``precision="auto"``, the user's default), once untimed
(warm-up), then once under cProfile and once under torch.profiler, and reports per frame:

* ``wall_s_per_frame`` and, on CUDA, ``device_kernel_s_per_frame`` and ``gpu_busy_fraction``
  (kernel time / wall time): a low fraction means the GPU waits on the host;
* ``kernel_launches_per_frame``, ``aten_ops_per_frame`` and ``host_syncs_per_frame``
  (``aten::_local_scalar_dense`` and ``aten::nonzero``, after which the host waits);
* the top host functions by own time (cProfile) and the top device ops.

Usage (on a CUDA machine)::

    python benchmarks/profile_tracking.py --device cuda --objects 1 20 --frames 20 \\
        --out benchmarks/results/profile_tracking_cuda.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import numpy as np
import torch
from bench_meta_predictor import prompt_points, synthetic_movie
from profile_training_step import SYNC_OPS

from napari_cellsam2.model.tiny import build_random_model, hiera_tiny_config
from napari_cellsam2.tracking import TrackingSession

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")


def propagate(model, movie: np.ndarray, objects: int, sync) -> float:
    """Seconds to propagate frames 1.. after points on frame 0 (frame 0 excluded); the movie and
    the points are bench_meta_predictor.py's, so the two benchmarks track the same thing."""
    session = TrackingSession(model, movie, precision="auto")
    for obj_id, xy in enumerate(prompt_points(objects, movie.shape[-1]), start=1):
        session.add_points(obj_id, 0, [tuple(xy)])
    results = iter(session.propagate("forward"))
    next(results)  # frame 0: the prompts' own decode
    sync()
    start = time.perf_counter()
    for _ in results:
        pass
    sync()
    return time.perf_counter() - start


def profile(model, movie: np.ndarray, objects: int, device: str) -> dict:
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    frames = len(movie) - 1
    propagate(model, movie, objects, sync)  # warm-up
    wall = propagate(model, movie, objects, sync)
    python_profile = cProfile.Profile()
    python_profile.enable()
    propagate(model, movie, objects, sync)
    python_profile.disable()
    text = io.StringIO()
    pstats.Stats(python_profile, stream=text).sort_stats("tottime").print_stats(15)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as torch_profile:
        propagate(model, movie, objects, sync)
    averages = torch_profile.key_averages()
    device_s = sum(e.self_device_time_total for e in averages) / 1e6 / frames
    launches = sum(e.count for e in averages if e.key in LAUNCHES)
    top_device = sorted(averages, key=lambda e: e.self_device_time_total, reverse=True)[:10]
    return {
        "objects": objects,
        "frames_timed": frames,
        "frames_per_s": frames / wall,
        "wall_s_per_frame": wall / frames,
        "device_kernel_s_per_frame": device_s if cuda else None,
        "gpu_busy_fraction": device_s * frames / wall if cuda else None,
        "kernel_launches_per_frame": launches / frames,
        "aten_ops_per_frame": sum(e.count for e in averages if e.key.startswith("aten::")) / frames,
        "host_syncs_per_frame": sum(e.count for e in averages if e.key in SYNC_OPS) / frames,
        "top_host_functions": text.getvalue().splitlines()[:40],
        "top_device_ops": [
            {"op": e.key, "ms_per_frame": e.self_device_time_total / 1e3 / frames, "calls": e.count}
            for e in top_device
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=20, help="frames tracked, frame 0 included")
    parser.add_argument("--size", type=int, default=512, help="frame px (the model runs at 1024)")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = build_random_model(hiera_tiny_config()).to(args.device)
    movie = synthetic_movie(args.frames, args.size)
    rows = []
    for count in args.objects:
        row = profile(model, movie, count, args.device)
        rows.append(row)
        busy = row["gpu_busy_fraction"]
        print(
            f"{count} objects: {row['frames_per_s']:.2f} frames/s, "
            f"{row['wall_s_per_frame'] * 1e3:.1f} ms wall/frame, "
            + (f"GPU busy {busy:.0%}, " if busy is not None else "")
            + f"{row['kernel_launches_per_frame']:.0f} launches, "
            f"{row['aten_ops_per_frame']:.0f} aten ops, "
            f"{row['host_syncs_per_frame']:.0f} host syncs per frame",
            flush=True,
        )
    report = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "frames": args.frames,
        "size": args.size,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
