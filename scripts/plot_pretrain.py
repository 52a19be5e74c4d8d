"""Plot demo-model pre-training curves (train loss, validation tracking scores) from compact logs.

    python scripts/plot_pretrain.py docs/results/demo_pretrain_metrics.jsonl \
        docs/results/demo_pretrain_no_teacher_metrics.jsonl --out docs/results/demo_pretrain.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for log in args.logs:
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        train = [r for r in rows if r["type"] == "train_mean"]
        val = [r for r in rows if r["type"] == "validation"]
        steps_per_epoch = next(r["steps_per_epoch"] for r in rows if r["type"] == "start")
        name = log.stem.replace("_metrics", "")
        loss_ax.plot([r["last_step"] for r in train], [r["loss"] for r in train], label=name)
        x = [r["epoch"] * steps_per_epoch for r in val]
        for key, style in (("val_TRA", "o-"), ("val_SEG", "s--")):
            score_ax.plot(x, [r[key] for r in val], style, label=f"{name} {key}")
    loss_ax.set(xlabel="step", ylabel="train loss (window means, compact_metrics.py)", yscale="log")
    score_ax.set(xlabel="step", ylabel="validation score (tracking session)", ylim=(0, 1))
    loss_ax.legend(fontsize="small")
    score_ax.legend(fontsize="x-small")
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
