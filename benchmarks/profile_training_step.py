"""Where a training step's time goes: host (Python, dispatch, kernel launches) or device.

Runs the real training loop (``napari_cellsam2.training.train``) on a synthetic
mother-machine dataset, profiles steps ``--skip``+1 .. ``--skip``+``--python-steps`` with
cProfile (top functions by own time) and the next ``--torch-steps`` with torch.profiler,
then prints the wall time per step, the device (kernel) time per step and the number of
kernel launches. A step whose device time is a small part of its wall time is bound by the
host, not by the GPU.

Counts that any machine can measure (issue 12's CPU proxy for host overhead):

* ``aten_ops_per_step``: every ``aten::`` event torch.profiler records over a step (forward,
  backward, gradient clipping, optimizer), nested ones included;
* ``host_syncs_per_step``: ``aten::_local_scalar_dense`` (``.item()``, ``float(t)``,
  ``bool(t)``, ``int(t)``, ``.tolist()``) and ``aten::nonzero`` (its output size), the ops after
  which the host waits for the device on CUDA;
* ``first_step_loss``: the loss of the first (seeded, fixed) clip before any update, so that an
  optimisation that must not change the numerics can be checked (fp32 on the CPU);
* on CUDA, ``kernel_launches_per_step`` and ``gpu_busy_fraction`` (kernel time / wall time).

Usage::

    python benchmarks/profile_training_step.py --device cuda [--resolution 512]
    OMP_NUM_THREADS=1 python benchmarks/profile_training_step.py --device cpu --resolution 128 \
        --frames 4 --objects 8 --out benchmarks/results/profile_training_step_cpu.json

Prints its report; ``--out`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
from pathlib import Path

import torch

from napari_cellsam2.datasets import write_dataset
from napari_cellsam2.training.config import load_config
from napari_cellsam2.training.events import StepEvent
from napari_cellsam2.training.loop import train

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--objects", type=int, default=8, help="scratch.max_num_objects")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides (key=value)")
    parser.add_argument("--skip", type=int, default=4, help="warm-up steps, not profiled")
    parser.add_argument("--python-steps", type=int, default=4)
    parser.add_argument("--torch-steps", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="profile-step-"))
    data = write_dataset(work / "data", "mother-machine", sequences=4, frames=30, seed=0)
    steps = args.skip + args.python_steps + args.torch_steps
    cfg = load_config(
        [
            f"launcher.experiment_log_dir={work / 'runs'}",
            f"model.base={args.model}",
            f"model.device={args.device}",
            f"dataset.data_dir={data}",
            "scratch.num_epochs=1",
            f"scratch.steps_per_epoch={steps}",
            f"scratch.num_frames={args.frames}",
            f"scratch.resolution={args.resolution}",
            f"scratch.max_num_objects={args.objects}",
            f"scratch.batch_size={args.batch_size}",
            "scratch.val_steps=1",
            "scratch.val_tracking_sequences=0",
            *args.set,
        ]
    )
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.device(args.device).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    python_profile = cProfile.Profile()
    torch_profile = torch.profiler.profile(activities=activities)
    seconds: list[float] = []
    losses: list[float] = []
    first_python, first_torch = args.skip, args.skip + args.python_steps
    for event in train(cfg):
        if not isinstance(event, StepEvent):
            continue
        seconds.append(event.seconds)
        losses.append(event.loss)
        done = len(seconds)
        if done == first_python:
            python_profile.enable()
        elif done == first_torch:
            python_profile.disable()
            torch_profile.start()
        elif done == steps:
            torch_profile.stop()
    pstats.Stats(python_profile).sort_stats("tottime").print_stats(20)
    averages = torch_profile.key_averages()
    print(averages.table(sort_by="self_device_time_total", row_limit=10))
    device_s = sum(e.self_device_time_total for e in averages) / 1e6 / args.torch_steps
    launches = sum(e.count for e in averages if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    aten_ops = sum(e.count for e in averages if e.key.startswith("aten::"))
    syncs = sum(e.count for e in averages if e.key in SYNC_OPS)
    wall = seconds[first_torch:steps]
    report = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if "cuda" in args.device else None,
        "model": args.model,
        "resolution": args.resolution,
        "frames": args.frames,
        "step_seconds": seconds,
        "profiled_wall_s_per_step": sum(wall) / len(wall),
        "device_kernel_s_per_step": device_s,
        "objects": args.objects,
        "batch_size": args.batch_size,
        "overrides": args.set,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "aten_ops_per_step": aten_ops / args.torch_steps,
        "host_syncs_per_step": syncs / args.torch_steps,
        "first_step_loss": losses[0],
        "kernel_launches_per_step": launches / args.torch_steps,
        "gpu_busy_fraction": device_s / (sum(wall) / len(wall)) if launches else None,
    }
    print(
        f"steps (s): {' '.join(f'{s:.2f}' for s in seconds)}\n"
        f"profiled steps: wall {report['profiled_wall_s_per_step']:.3f} s/step, device kernels "
        f"{device_s:.3f} s/step, {report['kernel_launches_per_step']:.0f} kernel launches/step\n"
        f"aten ops/step {report['aten_ops_per_step']:.0f}, host syncs/step "
        f"{report['host_syncs_per_step']:.0f}, first-step loss {losses[0]!r}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
