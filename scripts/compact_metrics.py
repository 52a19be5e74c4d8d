"""Shrink a training run's ``metrics.jsonl`` to what the results pages plot and cite.

    python scripts/compact_metrics.py RUN/metrics.jsonl --out docs/results/NAME_metrics.jsonl

Keeps the start, epoch, validation and checkpoint records as they are and replaces the per-step
records by one ``train_mean`` record per ``--every`` steps (mean loss and mean loss parts), the
form ``scripts/plot_pretrain.py`` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

KEEP = ("start", "epoch", "validation", "checkpoint", "done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    out, window = [], []

    def flush() -> None:
        if window:
            parts = {k: float(np.mean([s["parts"][k] for s in window])) for k in window[0]["parts"]}
            out.append(
                {"type": "train_mean", "first_step": window[0]["global_step"],
                 "last_step": window[-1]["global_step"], "epoch": window[-1]["epoch"],
                 "loss": float(np.mean([s["loss"] for s in window])), "parts": parts}
            )  # fmt: skip
            window.clear()

    for line in args.metrics.read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "step":
            window.append(record)
            if len(window) == args.every:
                flush()
        elif record["type"] in KEEP:
            flush()
            out.append(record)
    flush()
    args.out.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"wrote {args.out}: {len(out)} records")


if __name__ == "__main__":
    main()
