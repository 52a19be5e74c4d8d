"""Benchmark: our tracking engine against Meta's own SAM 2 video predictor, same weights.

Both sides run the same random-init sam2.1-hiera-tiny weights: our ``hiera-tiny-random`` model
is written as a Meta ``.pt`` file (``hf_to_meta_state_dict``), Meta's ``SAM2VideoPredictor``
loads that file, and our engine loads it back through our Meta loader
(``load_model`` on the ``.pt`` path), as a user with a Meta checkpoint would. Both track the same
``--frames`` synthetic frames of ``--size`` px from N point prompts on frame 0 (one object per
point), each with its own GPU recipe: Meta's bf16 autocast with TF32 on (its notebooks' setting),
ours ``precision="auto"``. Frame 0 (prompt decoding) is excluded; each configuration runs once
untimed first (warm-up: cuDNN autotuning, allocator).

Reported per object count: frames/s of each side and ours / Meta. Meta's side needs the ``sam2``
package (``pip install --no-deps`` its wheel, plus hydra-core and iopath); without it only our
side runs and the report says so. ``--vos`` adds Meta's ``vos_optimized=True`` predictor
(torch.compile of every component; minutes of compilation).

Usage (on a CUDA machine)::

    python benchmarks/bench_meta_predictor.py --device cuda --frames 60 --size 512 \\
        --objects 1 20 --out benchmarks/results/meta_predictor_cuda.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from napari_cellsam2.model.loading import load_model
from napari_cellsam2.model.meta_checkpoint import hf_to_meta_state_dict
from napari_cellsam2.model.tiny import build_random_model, hiera_tiny_config
from napari_cellsam2.tracking import TrackingSession

META_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def synthetic_movie(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """(T, size, size) uint8: bright drifting disks on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(0.1 * size, 0.9 * size, (24, 2))
    movie = rng.normal(40, 8, (frames, size, size))
    for t in range(frames):
        for cy, cx in centres + t * 0.5:
            movie[t][(yy - cy) ** 2 + (xx - cx) ** 2 < (size / 30) ** 2] += 120
    return movie.clip(0, 255).astype(np.uint8)


def prompt_points(count: int, size: int) -> np.ndarray:
    """``count`` (x, y) points on a grid over the frame."""
    side = int(np.ceil(np.sqrt(count)))
    ticks = (np.arange(side) + 0.5) * size / side
    grid = np.array([(x, y) for y in ticks for x in ticks], np.float32)
    return grid[:count]


def frames_per_second(step_times: list[float]) -> float:
    """Frames after frame 0 divided by the time from frame 0's result to the last one."""
    return (len(step_times) - 1) / (step_times[-1] - step_times[0])


def timed(results: Iterator, sync: Callable[[], None]) -> list[float]:
    """Wall-clock time at which each frame's result was available."""
    stamps = []
    for _ in results:
        sync()
        stamps.append(time.perf_counter())
    return stamps


def run_ours(meta_pt: Path, movie: np.ndarray, points: np.ndarray, device: str) -> float:
    model = load_model(str(meta_pt), device)  # the path a user with a Meta .pt takes
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fps = 0.0
    for _ in range(2):  # warm-up, then the timed run
        session = TrackingSession(model, movie, precision="auto")
        for obj_id, xy in enumerate(points, start=1):
            session.add_points(obj_id, 0, [tuple(xy)])
        fps = frames_per_second(timed(session.propagate("forward"), sync))
    return fps


def run_meta(meta_pt: Path, frames_dir: Path, points: np.ndarray, device: str, vos: bool) -> float:
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        META_CONFIG, str(meta_pt), device=device, vos_optimized=vos
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    )
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fps = 0.0
    with torch.inference_mode(), autocast:
        for _ in range(2):  # warm-up, then the timed run
            state = predictor.init_state(video_path=str(frames_dir))
            for obj_id, xy in enumerate(points, start=1):
                predictor.add_new_points_or_box(
                    state, frame_idx=0, obj_id=obj_id, points=xy[None], labels=np.array([1])
                )
            fps = frames_per_second(timed(predictor.propagate_in_video(state), sync))
    return fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--vos", action="store_true", help="also Meta's vos_optimized predictor")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="meta-bench-"))
    meta_pt = work / "sam2.1_hiera_tiny_random.pt"
    torch.save(
        {"model": hf_to_meta_state_dict(build_random_model(hiera_tiny_config()).state_dict())},
        meta_pt,
    )
    movie = synthetic_movie(args.frames, args.size)
    frames_dir = work / "frames"
    frames_dir.mkdir()
    for t, frame in enumerate(movie):
        Image.fromarray(frame).convert("RGB").save(frames_dir / f"{t:05d}.jpg", quality=95)
    try:
        import sam2  # noqa: F401

        meta_error = None
    except ImportError as err:
        meta_error = f"sam2 not importable: {err}"

    rows = []
    for count in args.objects:
        points = prompt_points(count, args.size)
        row = {"objects": count, "ours_fps": run_ours(meta_pt, movie, points, args.device)}
        if meta_error is None:
            for name, vos in [("meta_fps", False), *([("meta_vos_fps", True)] if args.vos else [])]:
                try:
                    row[name] = run_meta(meta_pt, frames_dir, points, args.device, vos)
                except Exception as err:  # report, and keep the other measurements
                    row[name] = None
                    row[f"{name}_error"] = f"{type(err).__name__}: {err}"
            if row.get("meta_fps"):
                row["ours_over_meta"] = row["ours_fps"] / row["meta_fps"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "frames": args.frames,
        "size": args.size,
        "meta": meta_error or "sam2 " + getattr(__import__("sam2"), "__version__", "?"),
        "rows": rows,
    }
    print(f"{'objects':>8} {'ours f/s':>9} {'Meta f/s':>9} {'ours/Meta':>9}")
    for row in rows:
        meta = row.get("meta_fps")
        ratio = row.get("ours_over_meta")
        print(
            f"{row['objects']:>8} {row['ours_fps']:>9.2f} "
            f"{(f'{meta:.2f}' if meta else '-'):>9} {(f'{ratio:.2f}x' if ratio else '-'):>9}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
