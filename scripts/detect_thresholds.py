"""Choose the automatic detection's thresholds on tuning movies (not the bars' test movies).

    OMP_NUM_THREADS=1 python scripts/detect_thresholds.py --model demo --seed 11 \
        --out docs/results/detect_thresholds.json

Writes fresh movies with ``scripts/make_demo_data.py --seed SEED`` (a seed used neither in
pre-training, 0, nor by ``demo_model_bars.py``, 7), runs ``TrackingSession.detect`` on the first
frame of each test movie for every combination of ``--methods`` (where the clicks come from:
the grid, or the model's cell-centre heatmap), ``min_predicted_iou`` and ``min_object_score``
below (other options at their defaults), and scores the found cells against the GT: a found
cell matches a GT cell at mask IoU >= 0.5, each at most once (greedy by IoU). Prints precision,
recall and F1 pooled over all movies, best F1 first, and per style for the best setting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tifffile
from make_demo_data import movies_by_style

from napari_cellsam2.ctc import open_path
from napari_cellsam2.evaluation.detection import detection_counts
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import DetectConfig, TrackingSession

ROOT = Path(__file__).resolve().parents[1]
MIN_IOU = (0.0, 0.15, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_SCORE = (0.0, 2.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="grid", help="comma-separated: grid, heatmap")
    args = parser.parse_args()
    methods = args.methods.split(",")
    model = load_model(args.model, "cpu")
    rows: dict[tuple[str, float, float], dict[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="detect-thresholds-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_demo_data.py"), "--out", str(data),
             "--seed", str(args.seed)],
            check=True, capture_output=True,
        )  # fmt: skip
        for style, folder in movies_by_style(data):
            seq = open_path(folder)
            gt_dir = folder.with_name(f"{folder.name}_GT") / "TRA"
            gt = tifffile.imread(sorted(gt_dir.glob("man_track*.tif"))[0])
            session = TrackingSession(model, seq.images)
            for method, min_iou, min_score in itertools.product(methods, MIN_IOU, MIN_SCORE):
                field = "heatmap_min_predicted_iou" if method == "heatmap" else "min_predicted_iou"
                config = DetectConfig(method=method, min_object_score=min_score, **{field: min_iou})
                found = np.zeros(gt.shape, np.int32)  # detections are disjoint
                for i, detection in enumerate(session.detect(0, config), start=1):
                    found[detection.mask] = i
                counts = rows.setdefault((method, min_iou, min_score), {}).setdefault(
                    style, {"found": 0, "gt": 0, "matched": 0}
                )
                for key, value in detection_counts(found, gt).items():
                    counts[key] += value

    def f1(counts: dict[str, int]) -> tuple[float, float, float]:
        p = counts["matched"] / max(1, counts["found"])
        r = counts["matched"] / max(1, counts["gt"])
        return p, r, 2 * p * r / max(1e-9, p + r)

    table = []
    for (method, min_iou, min_score), styles in rows.items():
        pooled = {k: sum(c[k] for c in styles.values()) for k in ("found", "gt", "matched")}
        p, r, f = f1(pooled)
        table.append(
            {
                "method": method,
                "min_predicted_iou": min_iou,
                "min_object_score": min_score,
                "precision": p,
                "recall": r,
                "f1": f,
                "styles": {s: dict(zip(("precision", "recall", "f1"), f1(c), strict=True))
                           for s, c in styles.items()},
            }
        )  # fmt: skip
    table.sort(key=lambda row: -row["f1"])
    report = {"model": args.model, "seed": args.seed, "defaults": asdict(DetectConfig()),
              "rows": table}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| method | min predicted IoU | min object score | precision | recall | F1 |")
    print("|---|---|---|---|---|---|")
    for row in table:
        print(
            f"| {row['method']} | {row['min_predicted_iou']} | {row['min_object_score']} "
            f"| {row['precision']:.2f} "
            f"| {row['recall']:.2f} | {row['f1']:.2f} |"
        )
    best = table[0]
    for style, s in best["styles"].items():
        print(f"best setting, {style}: P {s['precision']:.2f} R {s['recall']:.2f} F1 {s['f1']:.2f}")


if __name__ == "__main__":
    main()
