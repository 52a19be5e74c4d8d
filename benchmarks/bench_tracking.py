"""Benchmark: SAM 2 tracking throughput, click latency and memory on long sequences.

Measures, with random-weight models (speed does not depend on the weights):
  throughput   frames/s of ``TrackingSession.propagate`` with 1 and 20 objects (point prompts
               on frame 0; frame 0 itself is excluded), for the tiny test configuration
               (256 px) and the real sam2.1-hiera-tiny architecture (1024 px);
  click        latency of ``add_points`` + ``predict_frame`` for a new cell on a frame whose
               image features are cached (prompt encoder + mask decoder + memory encoder only),
               and on a frame seen for the first time (plus the image encoder);
  memory       tracking 200 vs 800 frames (tiny configuration, 5 objects), each in a fresh
               process: growth of the resident set (RSS, sampled after every frame) during
               propagation, and the bytes of tensors the session retains afterwards (memory
               bank, feature cache, preprocessed frames), deduplicated by storage. The labels
               output, (T, Y, X) uint16 by design, is committed before the baseline and
               reported separately. On CUDA the engine's peak is torch.cuda.max_memory_allocated.

Usage: ``python benchmarks/bench_tracking.py [--device cuda] [--threads N] [--skip-hiera]``.
The CPU defaults keep the hiera-tiny runs short (a few frames, so its memory bank is not yet
full and the numbers are optimistic); on a GPU pass e.g. ``--hiera-frames 50
--hiera-frames-many 20``.
Results: a table on stdout and benchmarks/results/tracking.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "tracking.json"


class SyntheticMovie:
    """A lazy (T, S, S) uint16 movie of bright round cells drifting on a grid.

    Frames are generated on access, so the input costs no memory whatever the length.
    """

    def __init__(self, frames: int, size: int, cells: int = 20, seed: int = 0) -> None:
        self.shape = (frames, size, size)
        self.dtype = np.dtype(np.uint16)
        grid = int(np.ceil(np.sqrt(cells)))
        step = size / grid
        self._centres = [
            ((i + 0.5) * step, (j + 0.5) * step) for j in range(grid) for i in range(grid)
        ][:cells]
        self._radius = max(3.0, step / 5)
        self._seed = seed
        self._yy, self._xx = np.mgrid[:size, :size]

    def __len__(self) -> int:
        return self.shape[0]

    def centres(self, t: int) -> list[tuple[float, float]]:
        drift = 2.0 * np.sin(t / 7.0)
        return [(x + drift, y) for x, y in self._centres]

    def __getitem__(self, t: int) -> np.ndarray:
        rng = np.random.default_rng(self._seed + int(t))
        frame = rng.normal(100.0, 10.0, self.shape[1:])
        for x, y in self.centres(int(t)):
            frame[(self._xx - x) ** 2 + (self._yy - y) ** 2 <= self._radius**2] += 400.0
        return frame.astype(np.uint16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(kind: str, device: torch.device, size: int | None = None):
    from napari_cellsam2.model.tiny import build_random_model, hiera_tiny_config, tiny_config

    config = tiny_config(size or 256) if kind == "tiny" else hiera_tiny_config(size or 1024)
    return build_random_model(config).to(device)


def throughput(model, movie: SyntheticMovie, objects: int, device: torch.device) -> dict:
    from napari_cellsam2.tracking import TrackingSession

    s = TrackingSession(model, movie)
    for k, (x, y) in enumerate(movie.centres(0)[:objects]):
        s.add_points(k + 1, 0, [[x, y]])
    s.predict_frame(0)
    run = s.propagate()
    next(run)  # frame 0: already decoded
    _sync(device)
    start = time.perf_counter()
    count = sum(1 for _ in run)
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"objects": objects, "frames": count, "seconds": elapsed, "fps": count / elapsed}


def clicks(model, movie: SyntheticMovie, repeats: int, device: torch.device) -> dict:
    from napari_cellsam2.tracking import TrackingSession

    s = TrackingSession(model, movie)
    x, y = movie.centres(0)[0]
    s.add_points(1, 0, [[x, y]])
    s.predict_frame(0)
    s.prefetch(1)
    cached = []
    for k in range(repeats + 2):
        cx, cy = movie.centres(1)[k % len(movie.centres(1))]
        _sync(device)
        start = time.perf_counter()
        s.add_points(2, 1, [[cx, cy]], replace=True)
        s.predict_frame(1)
        _sync(device)
        cached.append(time.perf_counter() - start)
    fresh = []
    for f in range(2, min(len(movie), 2 + max(2, repeats // 2))):
        cx, cy = movie.centres(f)[0]
        _sync(device)
        start = time.perf_counter()
        s.add_points(3, f, [[cx, cy]])
        s.predict_frame(f)
        _sync(device)
        fresh.append(time.perf_counter() - start)
    return {
        "cached_ms": 1000 * statistics.median(cached[2:]),
        "uncached_ms": 1000 * statistics.median(fresh[1:] or fresh),
        "repeats": repeats,
    }


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def retained_bytes(session) -> int:
    """Bytes of distinct tensor storages the session holds (not counting the labels output)."""
    seen: dict[int, int] = {}

    def visit(value) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, list | tuple):
            for v in value:
                visit(v)

    for o in session._objects.values():
        visit(o.outputs)
    visit(dict(session._features._vision_features))
    visit(session._features._pos_embeds)
    visit(dict(session.frames._cache))
    visit(session._positions._known)
    return sum(seen.values())


def memory_child(frames: int, model_size: int, frame_size: int, objects: int, device: str) -> dict:
    """Runs in a fresh process: one long propagation, memory sampled after every frame."""
    from napari_cellsam2.tracking import TrackingSession

    dev = torch.device(device)
    model = build("tiny", dev, model_size)
    movie = SyntheticMovie(frames, frame_size, cells=objects)
    s = TrackingSession(model, movie)
    for k, (x, y) in enumerate(movie.centres(0)):
        s.add_points(k + 1, 0, [[x, y]])
    s.labels.fill(0)  # commit the output array's pages before the baseline
    s.predict_frame(0)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        cuda_base = torch.cuda.memory_allocated(dev)
    base = peak = _rss()
    start = time.perf_counter()
    for _ in s.propagate():
        peak = max(peak, _rss())
    elapsed = time.perf_counter() - start
    out = {
        "frames": frames,
        "objects": objects,
        "rss_growth_mb": (peak - base) / 2**20,
        "retained_state_mb": retained_bytes(s) / 2**20,
        "labels_mb": s.labels.nbytes / 2**20,
        "stats": s.memory_stats(),
        "fps": frames / elapsed,
    }
    if dev.type == "cuda":
        out["cuda_peak_growth_mb"] = (torch.cuda.max_memory_allocated(dev) - cuda_base) / 2**20
    return out


def memory(lengths: list[int], args) -> list[dict]:
    rows = []
    for n in lengths:
        cmd = [
            sys.executable,
            __file__,
            "--child-memory",
            str(n),
            "--memory-model-size",
            str(args.memory_model_size),
            "--memory-frame-size",
            str(args.memory_frame_size),
            "--memory-objects",
            str(args.memory_objects),
            "--device",
            args.device,
            *(["--threads", str(args.threads)] if args.threads else []),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"memory run for {n} frames failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def machine(device: torch.device) -> dict:
    import transformers

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny-frames", type=int, default=30)
    parser.add_argument("--hiera-frames", type=int, default=3, help="frames with 1 object")
    parser.add_argument("--hiera-frames-many", type=int, default=1, help="frames, 20 objects")
    parser.add_argument("--hiera-frame-size", type=int, default=512)
    parser.add_argument("--clicks", type=int, default=8)
    parser.add_argument("--skip-hiera", action="store_true")
    parser.add_argument("--memory-lengths", default="200,800")
    parser.add_argument("--memory-model-size", type=int, default=128)
    parser.add_argument("--memory-frame-size", type=int, default=128)
    parser.add_argument("--memory-objects", type=int, default=5)
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.child_memory:
        row = memory_child(
            args.child_memory,
            args.memory_model_size,
            args.memory_frame_size,
            args.memory_objects,
            args.device,
        )
        print(json.dumps(row))
        return

    from napari_cellsam2.model.device import resolve_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    results: dict = {"machine": machine(device), "throughput": [], "clicks": [], "memory": []}
    plans = [("tiny", 256, args.tiny_frames, args.tiny_frames)]
    if not args.skip_hiera:
        plans.append(
            ("hiera-tiny-random", args.hiera_frame_size, args.hiera_frames, args.hiera_frames_many)
        )
    for name, frame_size, frames_one, frames_many in plans:
        model = build("tiny" if name == "tiny" else "hiera", device)
        for objects, frames in ((1, frames_one), (20, frames_many)):
            movie = SyntheticMovie(frames + 1, frame_size)
            row = throughput(model, movie, objects, device)
            results["throughput"].append({"model": name, "frame_size": frame_size, **row})
            print(f"throughput {name:18s} {objects:2d} obj: {row['fps']:.3f} frames/s", flush=True)
        row = clicks(model, SyntheticMovie(12, frame_size), args.clicks, device)
        results["clicks"].append({"model": name, "frame_size": frame_size, **row})
        print(
            f"click      {name:18s} cached {row['cached_ms']:.1f} ms, "
            f"uncached {row['uncached_ms']:.1f} ms",
            flush=True,
        )
        del model
        gc.collect()
    lengths = [int(n) for n in args.memory_lengths.split(",")]
    results["memory"] = memory(lengths, args)
    first, last = results["memory"][0], results["memory"][-1]
    key = "cuda_peak_growth_mb" if device.type == "cuda" else "rss_growth_mb"
    results["memory_ratio"] = {
        "engine_peak": last[key] / max(first[key], 1e-9),
        "retained_state": last["retained_state_mb"] / max(first["retained_state_mb"], 1e-9),
        "metric": key,
    }

    print()
    print(f"{'model':18s} {'px':>5s} {'objects':>7s} {'frames':>6s} {'frames/s':>9s}")
    for r in results["throughput"]:
        print(
            f"{r['model']:18s} {r['frame_size']:5d} {r['objects']:7d} {r['frames']:6d} "
            f"{r['fps']:9.3f}"
        )
    print(f"\n{'model':18s} {'click cached ms':>16s} {'click uncached ms':>18s}")
    for r in results["clicks"]:
        print(f"{r['model']:18s} {r['cached_ms']:16.1f} {r['uncached_ms']:18.1f}")
    print(
        f"\n{'frames':>6s} {'RSS growth MB':>14s} {'state MB':>9s} {'labels MB':>10s} {'fps':>6s}"
    )
    for r in results["memory"]:
        print(
            f"{r['frames']:6d} {r['rss_growth_mb']:14.1f} {r['retained_state_mb']:9.2f} "
            f"{r['labels_mb']:10.1f} {r['fps']:6.1f}"
        )
    ratio = results["memory_ratio"]
    print(
        f"ratio {lengths[-1]}/{lengths[0]}: engine peak ({key}) {ratio['engine_peak']:.2f}x, "
        f"retained state {ratio['retained_state']:.2f}x"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
