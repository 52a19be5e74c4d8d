"""GPU check: does tracking on CUDA (bf16 autocast, and fp32) agree with the CPU fp32 reference?

Tracks one CTC sequence, every GT cell of its first frame seeded as a mask, with the same model
on ``cpu`` (fp32, the reference), ``cuda`` with autocast disabled (fp32) and ``cuda`` with the
engine's default bf16 autocast, then compares the label stacks:

  pixel_agreement   fraction of pixels with the same label as the CPU result
  mean_iou          mean over (cell, frame) pairs present in either result of the cell's IoU
  presence_agree    fraction of (cell, frame) pairs where both results agree the cell exists
  gt_mean_iou       the same mean IoU against the GT TRA masks (how good the model is)

Usage (on a machine with CUDA):
  python scripts/gpu_check.py --model runs/x/checkpoints/epoch_002 --sequence data/test/01
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_cellsam2.ctc import open_sequence
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import session as session_module
from napari_cellsam2.tracking.session import TrackingSession


def track(spec: str, device: str, images: np.ndarray, seed: np.ndarray, autocast: bool) -> dict:
    loaded = load_model(spec, device)
    original = session_module.autocast_context
    if not autocast:
        session_module.autocast_context = lambda _device: contextlib.nullcontext()
    try:
        session = TrackingSession(loaded.model, images)
        session.seed_from_labels(0, seed)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in session.propagate("forward"):
            pass
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        session_module.autocast_context = original
    return {"labels": np.array(session.labels), "seconds": seconds}


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    ious, agree, pairs = [], 0, 0
    for t in range(len(a)):
        for label in (set(np.unique(a[t])) | set(np.unique(b[t]))) - {0}:
            in_a, in_b = a[t] == label, b[t] == label
            pairs += 1
            agree += bool(in_a.any()) == bool(in_b.any())
            ious.append((in_a & in_b).sum() / max(1, (in_a | in_b).sum()))
    return {
        "pixel_agreement": float((a == b).mean()),
        "mean_iou": float(np.mean(ious)) if ious else 1.0,
        "presence_agree": agree / max(1, pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model spec for load_model")
    parser.add_argument("--sequence", required=True, help="a CTC image folder with its _GT")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args()

    seq = open_sequence(args.sequence)
    count = min(args.frames, len(seq.images))
    images = np.stack([np.asarray(seq.images[t]) for t in range(count)])
    gt = np.stack([np.asarray(seq.gt.tra.masks[t]) for t in range(count)])
    if not torch.cuda.is_available():
        parser.error("CUDA is not available: this check compares CUDA with the CPU")
    runs = {
        "cpu fp32": ("cpu", False),
        "cuda fp32": ("cuda", False),
        "cuda bf16 autocast": ("cuda", True),
    }
    results, reference = {}, None
    for name, (device, autocast) in runs.items():
        out = track(args.model, device, images, gt[0], autocast)
        reference = out["labels"] if reference is None else reference
        row = {"seconds": out["seconds"], "fps": count / out["seconds"]}
        row.update(compare(reference, out["labels"]))
        row["gt_mean_iou"] = compare(gt, out["labels"])["mean_iou"]
        results[name] = row
    print(f"{'run':<20} {'fps':>8} {'pixel agree':>12} {'mean IoU':>9} {'presence':>9}", end="")
    print(f" {'IoU vs GT':>10}")
    for name, r in results.items():
        print(
            f"{name:<20} {r['fps']:8.2f} {r['pixel_agreement']:12.5f} {r['mean_iou']:9.4f} "
            f"{r['presence_agree']:9.4f} {r['gt_mean_iou']:10.4f}"
        )
    info = {
        "model": args.model,
        "sequence": args.sequence,
        "frames": count,
        "cells_seeded": int(len(np.unique(gt[0])) - 1),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
