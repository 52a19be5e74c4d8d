"""Mean and spread over seeds of several ``cellsam2 compare`` runs (one ``compare.json`` each).

    python scripts/summarize_compare.py RUN/seed*/compare.json --out docs/results/demo_finetune.json

Prints a markdown table per mode: TRA, SEG, DET and LNK with GT-mask seeding and with click
seeding, and the simulated annotator's clicks per track, mean IoU before and after its clicks and
the fraction of tracks it brought to its IoU target, as mean ± standard deviation over the seeds,
and writes the per-seed values and the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METRICS = ("TRA", "SEG", "DET", "LNK")


def _values(run: dict, mode: str) -> dict[str, float]:
    result = run["modes"][mode]
    out = {}
    for seeding, scores in result["metrics"].items():
        for metric in METRICS:
            value = scores["mean"].get(metric)
            if value is not None:
                out[f"{metric} {seeding}"] = float(value)
    if result.get("annotation"):
        out["clicks/track"] = float(result["annotation"]["clicks_per_track"])
        out["initial IoU"] = float(result["annotation"]["initial_mean_iou"])
        out["final IoU"] = float(result["annotation"]["final_mean_iou"])
        out["converged"] = float(result["annotation"]["converged_fraction"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in args.runs]
    modes = list(runs[0]["modes"])
    per_seed = {mode: [_values(run, mode) for run in runs] for mode in modes}
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for mode, seeds in per_seed.items():
        keys = sorted(set().union(*seeds))
        summary[mode] = {
            key: {
                "mean": float(np.mean([s[key] for s in seeds if key in s])),
                "std": float(np.std([s[key] for s in seeds if key in s])),
            }
            for key in keys
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"runs": [str(p) for p in args.runs], "per_seed": per_seed, "summary": summary},
            indent=2,
        )
        + "\n"
    )
    keys = sorted(set().union(*(summary[m] for m in modes)))
    print("| mode | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for mode in modes:
        cells = [
            f"{summary[mode][k]['mean']:.3f} ± {summary[mode][k]['std']:.3f}"
            if k in summary[mode]
            else "-"
            for k in keys
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
