"""What a model's division head says on every tracked frame of a movie (a diagnostic).

Seeds the movie from its GT on the first frame, tracks it forward with divisions off (so every
cell keeps being decoded, mothers included), and records the division probability of every
mask-decoder call per frame, with the lower of the predicted IoUs of outputs 1 and 2 (the
daughters' masks; a learned division also needs both above ``div_iou_thresh``). Reports the
highest probability on the frames where the GT has a division and on the others: a head that has
learned divisions peaks on the former.

    python scripts/division_probabilities.py --model RUN/checkpoints/best \
        --sequence WORK/data/test/CTC/03 --out probs.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_cellsam2.ctc import open_path
from napari_cellsam2.model.heads import division_head
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import TrackingSession


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--sequence", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    loaded = load_model(args.model, "cpu")
    if division_head(loaded.model) is None:
        raise SystemExit(f"{args.model} has no division head")
    seq = open_path(args.sequence)
    tra = seq.gt.tra
    division_frames = sorted(
        {
            tra.masks.indices.index(tra.lineage.tracks[d].begin)
            for d in tra.lineage.cleaned().parents
        }
    )
    session = TrackingSession(loaded, seq.images, divisions="off")
    session.seed_from_labels(0, np.asarray(tra.masks.frame(0)))
    calls: list[tuple[float, float]] = []  # (division probability, min IoU of outputs 1-2)

    def record(module, inputs, output) -> None:
        probs = torch.sigmoid(module.division_logits.float()).flatten().tolist()
        ious = output[1].float().reshape(len(probs), -1)[:, 1:3].amin(1).tolist()
        calls.extend(zip(probs, ious, strict=True))

    handle = loaded.model.mask_decoder.register_forward_hook(record)
    per_frame: dict[int, list[list[float]]] = {}
    try:
        for result in session.propagate("forward"):
            per_frame[result.frame] = [[round(p, 4), round(i, 4)] for p, i in calls]
            calls.clear()
    finally:
        handle.remove()
    tracked = {t: p for t, p in per_frame.items() if t > 0 and p}

    def peak(frames) -> float | None:
        values = [max(p for p, _ in tracked[t]) for t in frames if t in tracked]
        return max(values) if values else None

    report = {
        "model": args.model,
        "sequence": str(args.sequence),
        "division_frames": division_frames,
        "max_on_division_frames": peak(division_frames),
        "max_elsewhere": peak([t for t in tracked if t not in division_frames]),
        # per division frame: the most probable decode's [probability, daughters' min IoU]
        "peaks_on_division_frames": {t: max(tracked[t]) for t in division_frames if t in tracked},
        "per_frame": per_frame,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "per_frame"}))


if __name__ == "__main__":
    main()
