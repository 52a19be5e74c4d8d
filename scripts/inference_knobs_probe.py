"""Can inference settings alone close the demo model's gaps? Two probes on validation movies.

    python scripts/make_demo_data.py --out VAL0 --seed 0     # its val split: 1 movie per style
    python scripts/make_demo_data.py --out VAL11 --seed 11   # its test split: 2 movies per style
    OMP_NUM_THREADS=1 python scripts/inference_knobs_probe.py --data VAL0:val VAL11:test \
        --out docs/results/inference_knobs_probe.json

1. **Mask threshold.** The tracker gives a pixel to the object with the highest logit when that
   logit is above 0 (``tracking.compose.resolve_overlaps``). Each ``--thresholds`` value t shifts
   that cut to t (logits - t), and every movie is tracked as the bars are
   (``track_ctc_sequence``: GT masks of frame 0, forward, ``--divisions split
   --detect-new-cells 1``) and scored (TRA, SEG). Masks too small or too large would show as a
   SEG that rises away from 0.
2. **Which click output.** For one click at each GT cell's centroid on frame 0 the decoder gives
   three masks and their predicted IoUs; the tracker keeps the one with the highest predicted IoU
   (as SAM 2 does). Prints, per style, the median IoU with the GT of: the kept output, each of
   the three outputs, and the best of the three (an oracle no rule can beat). Masks are each
   object's own (``logits > 0`` on the frame), before overlaps between cells are resolved.

Neither probe trains anything; the movies' seeds (0's val split, 11) were never test movies.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from make_demo_data import movies_by_style

import napari_cellsam2.tracking.session as session_module
from napari_cellsam2.ctc import open_path
from napari_cellsam2.evaluation.scoring import evaluate_folders
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking.run import track_ctc_sequence
from napari_cellsam2.tracking.session import TrackingSession
from napari_cellsam2.training.forward import decode


def _movies(specs: list[str]) -> list[tuple[str, Path]]:
    """(style, sequence folder) for ROOT:SPLIT specs of make_demo_data.py folders."""
    return [
        movie
        for root, split in (spec.rsplit(":", 1) for spec in specs)
        for movie in movies_by_style(Path(root), split)
    ]


def _threshold_rows(loaded, movies, thresholds: list[float]) -> list[dict]:
    resolve = session_module.resolve_overlaps
    rows = []
    try:
        for t in thresholds:
            session_module.resolve_overlaps = lambda logits, ids, t=t: resolve(logits - t, ids)
            for style, seq in movies:
                with tempfile.TemporaryDirectory() as scratch:
                    res = Path(scratch) / "RES"
                    track_ctc_sequence(
                        seq, "gt-first-frame", loaded, res, device="cpu", direction="forward",
                        divisions="split", detect_new_cells=1, log=lambda _: None,
                    )  # fmt: skip
                    scores = evaluate_folders(
                        seq.with_name(seq.name + "_GT"), res, ["TRA", "SEG"], workers=1
                    )
                rows.append({"threshold": t, "style": style, "movie": str(seq), **scores})
                tra, seg = scores["TRA"], scores["SEG"]
                print(f"threshold {t:+.1f} {style:<20} TRA {tra:.3f} SEG {seg:.3f}")
    finally:
        session_module.resolve_overlaps = resolve
    return rows


@torch.inference_mode()
def _click_rows(loaded, movies) -> list[dict]:
    model = loaded.model
    rows = []
    for style, seq in movies:
        session = TrackingSession(loaded, open_path(seq).images, precision="fp32")
        letterbox = session.frames.letterbox
        out = model.get_image_features(session.frames[0][None], return_dict=True)
        *high, low = out.fpn_hidden_states  # levels (HW, 1, C)
        sizes = model.backbone_feature_sizes
        pairs = zip(high, sizes[:-1], strict=True)
        maps = [f.permute(1, 2, 0).reshape(1, f.shape[2], *s) for f, s in pairs]
        cond = (low + model.no_memory_embedding).permute(1, 2, 0)
        cond = cond.reshape(1, low.shape[2], *sizes[-1])
        gt_dir = seq.with_name(seq.name + "_GT") / "TRA"
        gt = tifffile.imread(sorted(gt_dir.glob("man_track*.tif"))[0])
        cells = [int(c) for c in np.unique(gt[gt > 0])]
        points = [(np.nonzero(gt == c)[1].mean(), np.nonzero(gt == c)[0].mean()) for c in cells]
        xy = torch.as_tensor(letterbox.points_to_model(points), dtype=torch.float32)
        m = len(cells)
        embeddings = [f.expand(m, -1, -1, -1) for f in (*maps, cond)]
        ones = torch.ones(m, 1, dtype=torch.int32)
        result = decode(model, embeddings, xy[:, None], ones, None, multimask=True)
        for i, cell in enumerate(cells):
            truth = gt == cell
            ious = []
            for k in range(result.mask_logits.shape[1]):
                mask = (letterbox.logits_to_original(result.mask_logits[i, k]) > 0).numpy()
                ious.append(float((mask & truth).sum() / max(1, (mask | truth).sum())))
            predicted = result.iou_scores[i].tolist()
            rows.append(
                {"style": style, "movie": str(seq), "cell": cell, "ious": ious,
                 "predicted_ious": predicted, "kept": int(np.argmax(predicted))}
            )  # fmt: skip
    return rows


def _summaries(thresholds: list[dict], clicks: list[dict]) -> dict:
    by_t: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in thresholds:
        by_t[r["threshold"]][r["style"]].append((r["TRA"], r["SEG"]))
    tracking = {
        str(t): {s: dict(zip(("TRA", "SEG"), np.mean(v, axis=0).tolist(), strict=True))
                 for s, v in styles.items()}
        for t, styles in by_t.items()
    }  # fmt: skip
    by_style: dict = collections.defaultdict(list)
    for r in clicks:
        by_style[r["style"]].append(r)
    click = {}
    for style, rs in by_style.items():
        click[style] = {
            "cells": len(rs),
            "kept": float(np.median([r["ious"][r["kept"]] for r in rs])),
            "outputs": [float(np.median([r["ious"][k] for r in rs])) for k in range(3)],
            "best_of_three": float(np.median([max(r["ious"]) for r in rs])),
        }
    return {"tracking_by_threshold": tracking, "click_iou_median": click}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="ROOT:SPLIT of make_demo_data")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--thresholds", default="-1,-0.5,0,0.5,1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model, device="cpu")
    movies = _movies(args.data)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    clicks = _click_rows(loaded, movies)
    rows = _threshold_rows(loaded, movies, thresholds)
    summary = _summaries(rows, clicks)
    for t, styles in summary["tracking_by_threshold"].items():
        print(f"threshold {float(t):+.1f}: " + ", ".join(
            f"{s} {v['TRA']:.3f}/{v['SEG']:.3f}" for s, v in styles.items()))  # fmt: skip
    for style, c in summary["click_iou_median"].items():
        outputs = " / ".join(f"{v:.3f}" for v in c["outputs"])
        print(f"{style:<20} {c['cells']:>3} cells: kept {c['kept']:.3f}, outputs {outputs}, "
              f"best of three {c['best_of_three']:.3f}")  # fmt: skip
    args.out.write_text(
        json.dumps({"model": args.model, "data": args.data, **summary, "tracking": rows,
                    "clicks": clicks}, indent=1) + "\n"
    )  # fmt: skip


if __name__ == "__main__":
    main()
