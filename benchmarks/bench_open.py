"""Benchmark: opening a 1000-frame 512x512 CTC sequence with the napari-cellsam2 reader.

Measures (each phase in a fresh Python process, so imports and peak RSS are per phase):
  reader_image / reader_full   the reader function alone (images only / images + TRA + tracks)
  napari_image / napari_full   ``viewer.open(path, plugin="napari-cellsam2")`` in a
                               Viewer(show=False), after napari's own one-off start-up
  frame_access                 random single-frame reads (image, TRA) and napari time-slider steps

"image" opens a folder holding only ``01`` (a link to the sequence), so no TRA is read; "full"
opens the sequence with ``01_GT``: TRA labels plus the tracks layer, which reads every TRA frame.
The data set is generated once (uncompressed TIFFs) and cached in --data. Needs a display:
``xvfb-run -a python benchmarks/bench_open.py``. Results: benchmarks/results/open.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "open.json"
PHASES = ("reader_image", "reader_full", "napari_image", "napari_full", "frame_access")
GRID = 8  # cells on an 8x8 grid; every other cell divides half-way


# ---- data -----------------------------------------------------------------------------------
def _write_sequence(root: Path, frames: int, size: int, seed: int = 0) -> None:
    """Square cells jittering on a grid; half divide at frames // 2. Uncompressed, fast."""
    import tifffile

    rng = np.random.default_rng(seed)
    step = size // GRID
    half = max(2, step // 8)  # half side of a square
    jitter = step // 10
    centres = [
        (step // 2 + i * step, step // 2 + j * step) for i in range(GRID) for j in range(GRID)
    ]
    divides = {k + 1 for k in range(0, len(centres), 2)}
    split = frames // 2
    n = len(centres)
    tracks = {k + 1: [k + 1, 0, split - 1 if k + 1 in divides else frames - 1, 0] for k in range(n)}
    daughters = {}
    for m in sorted(divides):
        for off in (-1, 1):
            label = n + 1 + len(daughters)
            daughters[label] = (m, off)
            tracks[label] = [label, split, frames - 1, m]
    noise = [rng.integers(0, 200, (size, size), dtype=np.uint16) for _ in range(8)]
    phase = rng.uniform(0, 2 * np.pi, (len(tracks) + 1, 2))
    img_dir, tra_dir = root / "01", root / "01_GT" / "TRA"
    img_dir.mkdir(parents=True)
    tra_dir.mkdir(parents=True)
    digits = 4 if frames > 1000 else 3
    for t in range(frames):
        lab = np.zeros((size, size), np.uint16)
        for label in tracks:
            if not tracks[label][1] <= t <= tracks[label][2]:
                continue
            if label in daughters:
                m, off = daughters[label]
                cy, cx = centres[m - 1]
                cy += off * (half + 2)
            else:
                cy, cx = centres[label - 1]
            dy, dx = (jitter * np.sin(t / 25 + phase[label])).astype(int)
            lab[cy + dy - half : cy + dy + half, cx + dx - half : cx + dx + half] = label
        image = noise[t % len(noise)] + (lab > 0).astype(np.uint16) * 800 + 100
        tifffile.imwrite(img_dir / f"t{t:0{digits}d}.tif", image)
        tifffile.imwrite(tra_dir / f"man_track{t:0{digits}d}.tif", lab)
    lines = "".join(f"{lab} {b} {e} {p}\n" for lab, b, e, p in tracks.values())
    (tra_dir / "man_track.txt").write_text(lines)


def ensure_data(data: Path, frames: int, size: int) -> dict[str, str]:
    """Generate (once) ``data/full/{01,01_GT}`` and ``data/image_only/01`` -> ``full/01``."""
    marker = data / "complete.json"
    params = {"frames": frames, "size": size, "grid": GRID}
    if not (marker.is_file() and json.loads(marker.read_text()) == params):
        import shutil

        shutil.rmtree(data, ignore_errors=True)
        start = time.perf_counter()
        _write_sequence(data / "full", frames, size)
        (data / "image_only").mkdir()
        (data / "image_only" / "01").symlink_to(data / "full" / "01")
        marker.write_text(json.dumps(params))
        print(f"generated {frames} frames {size}x{size} in {time.perf_counter() - start:.1f} s")
    return {"image": str(data / "image_only" / "01"), "full": str(data / "full" / "01")}


# ---- measurement helpers --------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory growth (MB) during a block, sampled every 5 ms."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.growth_mb = (self.peak - self.start) / 2**20


def timed(fn, repeats: int) -> dict:
    times, growth = [], []
    for _ in range(repeats):
        with PeakRSS() as rss:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        growth.append(rss.growth_mb)
    return {"first_s": times[0], "best_s": min(times), "peak_rss_growth_mb": max(growth)}


def phase_reader(path: str, repeats: int) -> dict:
    def run():
        from napari_cellsam2._reader import napari_get_reader

        layers = napari_get_reader(path)(path)
        assert layers

    return timed(run, repeats)


def phase_napari(path: str, repeats: int) -> dict:
    import napari

    viewer = napari.Viewer(show=False)
    # napari initialises lazily on its first layer of each type (pint units, scipy.ndimage, layer
    # modules: ~1-2 s here); pay that up front so "first" is the plugin's own first open.
    viewer.add_image(np.zeros((2, 4, 4), np.uint16))
    viewer.add_labels(np.zeros((2, 4, 4), np.uint16))
    viewer.add_tracks(np.array([[1, 0, 1, 1], [1, 1, 2, 2]], float))

    def run():
        viewer.layers.clear()
        viewer.open(path, plugin="napari-cellsam2")

    out = timed(run, repeats)
    out["layers"] = [f"{type(layer).__name__}:{layer.name}" for layer in viewer.layers]
    viewer.close()
    return out


def phase_frames(paths: dict[str, str], count: int) -> dict:
    import napari

    from napari_cellsam2.ctc import open_sequence

    rng = np.random.default_rng(1)
    seq = open_sequence(paths["full"])
    out = {}
    for name, frames in (("image", seq.images), ("tra", seq.gt.tra.masks)):
        positions = rng.choice(len(frames), size=min(count, len(frames)), replace=False)
        times = []
        for p in positions:
            start = time.perf_counter()
            frames[int(p)]
            times.append(time.perf_counter() - start)
        out[f"{name}_frame_ms"] = 1000 * statistics.median(times)
    viewer = napari.Viewer(show=False)
    for name in ("image", "full"):
        viewer.layers.clear()
        viewer.open(paths[name], plugin="napari-cellsam2")
        steps = rng.choice(viewer.dims.nsteps[0], size=count, replace=False)
        times = []
        for t in steps:
            start = time.perf_counter()
            viewer.dims.set_current_step(0, int(t))
            times.append(time.perf_counter() - start)
        out[f"napari_step_{name}_ms"] = 1000 * statistics.median(times)
    viewer.close()
    return out


def run_phase(phase: str, paths: dict[str, str], repeats: int) -> dict:
    if phase == "frame_access":
        return phase_frames(paths, count=50)
    kind = phase.split("_")[1]
    runner = phase_reader if phase.startswith("reader") else phase_napari
    return runner(paths[kind], repeats if kind == "image" else max(1, repeats - 1))


# ---- driver ---------------------------------------------------------------------------------
def print_table(results: dict) -> None:
    print(f"\n{'phase':<14}{'first s':>10}{'best s':>10}{'peak RSS +MB':>14}")
    for phase in PHASES[:4]:
        r = results[phase]
        print(
            f"{phase:<14}{r['first_s']:>10.3f}{r['best_s']:>10.3f}{r['peak_rss_growth_mb']:>14.1f}"
        )
    for key, value in results["frame_access"].items():
        print(f"{key:<28}{value:>10.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="cache folder for the generated sequence")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = (
        args.data or Path(tempfile.gettempdir()) / f"cellsam2-bench-open-{args.frames}x{args.size}"
    )
    paths = ensure_data(data.resolve(), args.frames, args.size)
    if args.phase:  # child process: one phase, JSON on the last line
        print(json.dumps(run_phase(args.phase, paths, args.repeats)))
        return 0
    results, load_at_start = {}, os.getloadavg()
    for phase in PHASES:
        cmd = [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--data",
            str(data),
            "--frames",
            str(args.frames),
            "--size",
            str(args.size),
            "--repeats",
            str(args.repeats),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"phase {phase} failed")
        results[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{phase}: done")
    print_table(results)
    report = {
        "frames": args.frames,
        "size": args.size,
        "data": str(data),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": load_at_start,
        "load_avg_at_end": os.getloadavg(),
        "note": "page cache warm (data generated/read before); see load_avg_* for other work",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
