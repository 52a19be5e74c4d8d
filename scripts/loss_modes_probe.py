"""Probe: the same validation clips scored under SAM 2's training semantics and its eval ones.

Validation in the training loop runs in eval mode, the semantics tracking uses: stability-based
mask choice and binarised masks in memory. The loop optimises the loss in train mode. This script
computes the mean ``clip_loss`` of every validation clip in both modes, for each model, with the
same prompts (seeded per clip), to show how far the two semantics are apart.

Usage (after ``bash scripts/proxy_compare.sh WORK``; docs/results/README.md):
  python scripts/loss_modes_probe.py --run WORK/compare/lora --data WORK/mm \\
      base=WORK/pretrain/checkpoints/epoch_008 lora=WORK/compare/lora/checkpoints/epoch_003 \\
      full=WORK/compare/full/checkpoints/epoch_003
Prints a table; ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from napari_cellsam2.model.loading import load_model
from napari_cellsam2.training.config import load_config, to_dataclass
from napari_cellsam2.training.data import ClipOptions, CTCClipDataset, collate_clips
from napari_cellsam2.training.forward import unwrap_model
from napari_cellsam2.training.objective import clip_loss


def mean_loss(model, clips: CTCClipDataset, scratch, train_mode: bool) -> float:
    model.train(train_mode)
    sam = unwrap_model(model)
    total = 0.0
    with torch.no_grad():
        for i in range(len(clips)):
            torch.manual_seed(i)  # dropout draws, in train mode
            generator = torch.Generator().manual_seed(i)  # the same prompts in both modes
            loss, _ = clip_loss(sam, collate_clips([clips[i]]), scratch, generator)
            total += float(loss)
    return total / len(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a compare run folder (its config.yaml)")
    parser.add_argument("--data", required=True, help="the dataset with a val split")
    parser.add_argument("models", nargs="+", help="name=model spec")
    parser.add_argument("--out")
    args = parser.parse_args()

    scratch = to_dataclass(load_config(yaml_file=Path(args.run) / "config.yaml")).scratch
    options = ClipOptions.from_scratch(scratch, augment=False)
    clips = CTCClipDataset(args.data, "val", **vars(options))
    rows = {}
    for item in args.models:
        name, spec = item.split("=", 1)
        model = load_model(spec, "cpu", merge_lora=False).model
        rows[name] = {
            "train_mode": mean_loss(model, clips, scratch, True),
            "eval_mode": mean_loss(model, clips, scratch, False),
        }
    print(f"{len(clips)} validation clips\n{'model':<8} {'train-mode':>11} {'eval-mode':>10}")
    for name, row in rows.items():
        print(f"{name:<8} {row['train_mode']:11.2f} {row['eval_mode']:10.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"clips": len(clips), "models": rows}, indent=2))


if __name__ == "__main__":
    main()
