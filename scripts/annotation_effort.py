"""The simulated annotator's effort for the models of finished ``cellsam2 compare`` runs, at other
targets than the run's own.

    python scripts/annotation_effort.py RUN/seed*/ --targets 0.5:5,0.8:3 --out FILE.json

``compare`` runs the annotator at one IoU target and click budget (its defaults: IoU 0.8 on every
frame of a track, 3 clicks). For a small model whose masks are still coarse, that target is out
of reach for almost every track whatever the model, and clicks per track sit at the budget. This
script reloads each mode's checkpoint of each run (the one compare scored: ``result.json``'s
``checkpoint``; the base model for zero-shot), tracks the run's test split from one click per
cell as compare does, and runs the annotator at each ``IOU:BUDGET`` target. Prints clicks per
track, the fraction of tracks brought to the target and the mean IoU before and after, per mode
and target, as mean ± standard deviation over the runs; writes per-run values and the summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_cellsam2.ctc import open_dataset
from napari_cellsam2.evaluation.compare import effort_summary, sequence_effort
from napari_cellsam2.model.loading import load_model

FIELDS = ("clicks_per_track", "converged_fraction", "initial_mean_iou", "final_mean_iou")


def _effort(model, sequences, iou: float, budget: int) -> dict[str, float]:
    """compare's annotation of one model, at this target."""
    efforts = [e for seq in sequences for e in sequence_effort(model, seq, iou, budget)]
    summary = effort_summary(efforts, sum(seq.num_frames for seq in sequences), iou, budget)
    return {k: float(summary[k]) for k in FIELDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="compare run folders")
    parser.add_argument("--targets", default="0.5:5,0.8:3", help="IOU:BUDGET,...")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    targets = [(float(t.split(":")[0]), int(t.split(":")[1])) for t in args.targets.split(",")]
    per_run: dict[str, dict[str, list[dict[str, float]]]] = {}
    for run in args.runs:
        settings = json.loads((run / "settings.json").read_text())
        sequences = open_dataset(settings["data"]).sequences(settings["split"])
        for result_path in sorted(run.glob("*/result.json")):
            result = json.loads(result_path.read_text())
            model = load_model(result["checkpoint"] or settings["base"], "cpu")
            for iou, budget in targets:
                key = f"IoU {iou:g}, {budget} clicks"
                effort = _effort(model, sequences, iou, budget)
                per_run.setdefault(result["mode"], {}).setdefault(key, []).append(effort)
                print(f"{run.name} {result['mode']} {key}: {effort}", flush=True)
    summary = {
        mode: {
            key: {
                f: {
                    "mean": float(np.mean([e[f] for e in runs])),
                    "std": float(np.std([e[f] for e in runs])),
                }
                for f in FIELDS
            }
            for key, runs in by_target.items()
        }
        for mode, by_target in per_run.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"runs": [str(r) for r in args.runs], "per_run": per_run, "summary": summary}, indent=2
        )
        + "\n"
    )
    print("| mode | target | " + " | ".join(FIELDS) + " |")
    print("|---|---|" + "---|" * len(FIELDS))
    for mode, by_target in summary.items():
        for key, values in by_target.items():
            cells = [f"{values[f]['mean']:.3f} ± {values[f]['std']:.3f}" for f in FIELDS]
            print(f"| {mode} | {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
