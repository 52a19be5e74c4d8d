"""Benchmark: training step time and peak memory, LoRA vs full fine-tuning.

Runs the real loop (``napari_cellsam2.training.train`` with the real ``clip_loss``) for a few
steps on synthetic mother-machine clips, for the tiny test model and the real sam2.1-hiera-tiny
architecture with random weights (``hiera-tiny-random``), at ``--resolution`` (512) with
``--frames`` (3) frames per clip and the config's default object counts (up to 30 cells + 0-8
background objects, 2 correction clicks). Every (model, mode) runs in a fresh process so peak
memory is its own: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS
(which includes Python + torch themselves; ``rss_before_mb`` is the RSS before the model was
loaded: imports and data). Step time excludes data loading (StepEvent.seconds); the first
``--warmup`` steps are not timed.

Random models start with every bias and positional embedding at exactly zero; on the letterbox
padding (pixel value 0 after normalisation) every token is then exactly zero, LayerNorm sees zero
variance and its backward amplifies by 1/sqrt(eps) per layer: full fine-tuning of random
hiera-tiny gets an infinite gradient norm at step 1 (the loop rightly stops). Trained weights have
no such zeros, so the benchmark fills the all-zero tensors with N(0, 0.02) noise first (same
shapes and cost), saves that model as a checkpoint and trains from it.

Usage: python benchmarks/bench_training.py [--device cuda] [--steps 3] [--warmup 1]
Prints a table and writes benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "training.json"
SPECS = ("tiny", "hiera-tiny-random")
MODES = ("lora", "full")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(spec: str, mode: str, args: argparse.Namespace) -> dict:
    """Train ``warmup + steps`` steps of one configuration in this process."""
    import torch

    from napari_cellsam2.ctc import Lineage
    from napari_cellsam2.datasets import mother_machine
    from napari_cellsam2.model.checkpoint import save_model_checkpoint
    from napari_cellsam2.model.loading import load_model
    from napari_cellsam2.training import ErrorEvent, StartEvent, StepEvent, load_config, train
    from napari_cellsam2.training.data import CTCClipDataset

    # one clip per step, all in one epoch (a shorter movie ran out of clips before the
    # timed steps: --warmup 2 --steps 5 timed only 2 steps)
    seq = mother_machine(frames=args.frames - 1 + args.warmup + args.steps, seed=0)
    data = CTCClipDataset.from_arrays(
        seq.images,
        seq.labels,
        Lineage.from_labels(seq.labels, seq.parents),
        num_frames=args.frames,
        resolution=args.resolution,
    )
    data.set_epoch(1)
    objects = statistics.mean(data[i].num_objects for i in range(len(data)))
    rss_before = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        model = load_model(spec, "cpu").model
        with torch.no_grad():
            for p in model.parameters():
                if not p.any():
                    p.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
        save_model_checkpoint(model, base, base_spec=spec)
        del model
        log = Path(tmp) / "log"
        cfg = load_config(
            [
                f"launcher.experiment_log_dir={log}",
                f"model.base={base}",
                f"model.device={args.device}",
                f"scratch.use_lora={mode == 'lora'}",
                f"scratch.resolution={args.resolution}",
                f"scratch.num_frames={args.frames}",
                "scratch.num_epochs=1",
                f"scratch.steps_per_epoch={args.warmup + args.steps}",
            ]
        )
        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds, start = [], None
        for event in train(cfg, dataset=data):
            if isinstance(event, StartEvent):
                start = event
            elif isinstance(event, StepEvent):
                seconds.append(event.seconds)
            elif isinstance(event, ErrorEvent):
                raise RuntimeError(f"{spec}/{mode}: {event.message}")
        timed = seconds[args.warmup :]
        if len(timed) != args.steps:
            raise RuntimeError(f"{spec}/{mode}: timed {len(timed)} steps, not {args.steps}")
        return {
            "spec": spec,
            "mode": mode,
            "trainable": start.trainable,
            "total_params": start.total_params,
            "step_s_median": statistics.median(timed),
            "step_s_all": seconds,
            "peak_mb": (torch.cuda.max_memory_allocated() / 2**20) if cuda else _rss_mb(),
            "memory": "cuda max_memory_allocated" if cuda else "process peak RSS",
            "rss_before_mb": rss_before,
            "objects_per_clip": objects,
        }


def machine(device: str) -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--specs", default=",".join(SPECS))
    parser.add_argument("--one", nargs=2, metavar=("SPEC", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch CPU threads (0 = torch's default); on a shared CPU use fewer than the cores: "
        "oversubscribed OpenMP threads make every small op wait for a descheduled thread",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(*args.one, args)))
        return

    rows = []
    for spec in args.specs.split(","):
        for mode in MODES:
            flags = [f"--{k}={getattr(args, k)}" for k in ("device", "steps", "warmup")]
            flags += [f"--resolution={args.resolution}", f"--frames={args.frames}"]
            flags += [f"--threads={args.threads}"]
            done = subprocess.run(
                [sys.executable, __file__, "--one", spec, mode, *flags],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                sys.exit(f"{spec}/{mode} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"done {spec}/{mode}: {r['step_s_median']:.2f} s/step", file=sys.stderr)

    memory = rows[0]["memory"]
    print(
        f"\nresolution {args.resolution}, {args.frames} frames/clip, device {args.device}, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    header = f"{'model':<20}{'mode':<6}{'trainable':>14}{'total':>14}{'s/step':>9}"
    print(header + f"{'peak MB':>10}  ({memory})")
    for r in rows:
        print(
            f"{r['spec']:<20}{r['mode']:<6}{r['trainable']:>14,}{r['total_params']:>14,}"
            f"{r['step_s_median']:>9.2f}{r['peak_mb']:>10.0f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(args.device),
        "settings": {
            k: getattr(args, k) for k in ("resolution", "frames", "steps", "warmup", "threads")
        },
        "rows": rows,
    }
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
