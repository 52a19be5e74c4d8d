"""GPU check: does tracking on CUDA (bf16 autocast, and fp32) agree with the CPU fp32 reference?

Tracks one CTC sequence, every GT cell of its first frame seeded as a mask, with the same model
on ``cpu`` (fp32, the reference), ``cuda`` at ``precision="fp32"`` (strict: TF32 off) and
``cuda`` at ``precision="bf16"`` (what ``auto`` picks on CUDA), then compares the label stacks
and object scores:

  pixel_agreement   fraction of pixels with the same label as the CPU result
  mean_iou          mean over (cell, frame) pairs present in either result of the cell's IoU
  presence_agree    fraction of (cell, frame) pairs where both results agree the cell exists
  score_diff_*      largest difference of object-score logits (first propagated frame / all)
  gt_mean_iou       the same mean IoU against the GT TRA masks (how good the model is)

Usage (on a machine with CUDA):
  python scripts/gpu_check.py --model runs/x/checkpoints/epoch_002 --sequence data/test/01
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_cellsam2.ctc import open_sequence
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking.session import TrackingSession

RUNS = {  # name: (device, precision)
    "cpu-fp32": ("cpu", "fp32"),
    "cuda-fp32": ("cuda", "fp32"),
    "cuda-bf16": ("cuda", "bf16"),
}


def track(spec: str, device: str, images: np.ndarray, seed: np.ndarray, precision: str) -> dict:
    """Track with the engine at ``precision`` (``fp32`` on CUDA is strict: TF32 off too)."""
    loaded = load_model(spec, device)
    session = TrackingSession(loaded.model, images, precision=precision)
    session.seed_from_labels(0, seed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = [r.scores for r in session.propagate("forward")]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"labels": np.array(session.labels), "scores": scores, "seconds": seconds}


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


def score_difference(a: list[dict], b: list[dict]) -> dict:
    """Object-score (presence logit) differences: on the first propagated frame, where both
    runs start from the same memory, and over all frames, where differences compound."""
    diffs = [[abs(x[k] - y[k]) for k in x.keys() & y.keys()] for x, y in zip(a, b, strict=True)]
    flat = [d for frame in diffs for d in frame]
    return {
        "score_diff_first_frame": max(diffs[1], default=0.0) if len(diffs) > 1 else 0.0,
        "score_diff_max": max(flat, default=0.0),
        "score_scale": float(np.mean([abs(v) for frame in a for v in frame.values()])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model spec for load_model")
    parser.add_argument("--sequence", required=True, help="a CTC image folder with its _GT")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument(
        "--runs", default=",".join(RUNS), help="comma-separated; the first is the reference"
    )
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args()

    seq = open_sequence(args.sequence)
    count = min(args.frames, len(seq.images))
    images = np.stack([np.asarray(seq.images[t]) for t in range(count)])
    gt = np.stack([np.asarray(seq.gt.tra.masks[t]) for t in range(count)])
    names = args.runs.split(",")
    if any(RUNS[name][0] == "cuda" for name in names) and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --runs cpu-fp32 to check the script itself")
    results, reference = {}, None
    for name in names:
        device, precision = RUNS[name]
        out = track(args.model, device, images, gt[0], precision)
        reference = out if reference is None else reference
        row = {"seconds": out["seconds"], "fps": count / out["seconds"]}
        row.update(compare(reference["labels"], out["labels"]))
        row["first_frame_pixel_agreement"] = float(
            (reference["labels"][1] == out["labels"][1]).mean()
        )
        row.update(score_difference(reference["scores"], out["scores"]))
        row["gt_mean_iou"] = compare(gt, out["labels"])["mean_iou"]
        results[name] = row
    columns = {
        "fps": "fps",
        "pixel_agreement": "px agree",
        "first_frame_pixel_agreement": "px agree t1",
        "mean_iou": "mean IoU",
        "presence_agree": "presence",
        "score_diff_first_frame": "score d t1",
        "score_diff_max": "score d max",
        "gt_mean_iou": "IoU vs GT",
    }
    print(f"{'run':<10}" + "".join(f" {h:>11}" for h in columns.values()))
    for name, r in results.items():
        print(f"{name:<10}" + "".join(f" {r[c]:11.5g}" for c in columns))
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
