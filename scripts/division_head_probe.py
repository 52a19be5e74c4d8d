"""Can the division head tell a dividing cell from the others? A diagnostic on the training path.

Trains the ``demo`` model with a fresh division head (full fine-tune, GT mask prompts, memory
from the model's own masks) on training clips that hold a division, and every ``--every`` steps
measures, on held-out clips of the validation split, the ROC AUC of the head's division logits:
positives are the mothers' tracked decodes at GT divisions (teacher-forced, as in training),
negatives every other tracked decode. AUC 0.5 = the head sees nothing; 1 = it separates them.

    python scripts/division_head_probe.py --data WORK/data --steps 600 --out probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_cellsam2.model.heads import attach_division_head
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.training.config import ScratchConfig
from napari_cellsam2.training.data import CTCClipDataset, collate_clips
from napari_cellsam2.training.forward import run_clip
from napari_cellsam2.training.objective import clip_loss, gt_divisions
from napari_cellsam2.training.prompts import sample_prompts


def _auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


@torch.no_grad()
def _scores(model, clips: list) -> tuple[list[float], list[float]]:
    model.eval()
    pos, neg = [], []
    for sample in clips:
        batch = collate_clips([sample])
        clip_idx, slot = batch.obj_valid.nonzero(as_tuple=True)
        prompt_frame = batch.prompt_frame[clip_idx, slot]
        targets = batch.targets[clip_idx, :, slot] > 0.5
        divisions = gt_divisions(batch, clip_idx, slot, prompt_frame, targets)
        rows = torch.arange(len(clip_idx))
        prompts, _ = sample_prompts(
            targets[rows, prompt_frame], batch.is_background[clip_idx, slot],
            batch.valid_region[clip_idx], 0.0, 0.0, 1.0, torch.Generator().manual_seed(0),
        )  # fmt: skip
        out = run_clip(model, batch.pixel_values, clip_idx, prompt_frame, prompts,
                       divisions=divisions)  # fmt: skip
        dividing = {(d.step, d.row) for d in out.divisions}
        for index, step in enumerate(out.steps):
            if step.frame == 0 or step.division_logits is None:
                continue
            for row, logit in enumerate(step.division_logits.tolist()):
                (pos if (index, row) in dividing else neg).append(logit)
    return pos, neg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    options = dict(num_frames=4, resolution=128, max_num_objects=8, max_num_bkgd_objects=2)
    train = CTCClipDataset(args.data, "train", **options)
    held = CTCClipDataset(args.data, "val", augment=False, **options)
    train_ids = np.flatnonzero(train.division_clips())
    held_clips = [held[int(i)] for i in np.flatnonzero(held.division_clips())]
    model = load_model("demo", device="cpu").model
    attach_division_head(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scratch = ScratchConfig(prob_point=0.0, prob_box=0.0, prob_mask=1.0,
                            num_correction_pt_per_frame=0, max_num_bkgd_objects=2)  # fmt: skip
    rng = np.random.default_rng(0)
    curve = []
    for step in range(args.steps + 1):
        if step % args.every == 0:
            pos, neg = _scores(model, held_clips)
            curve.append({"step": step, "auc": _auc(pos, neg), "positives": len(pos),
                          "negatives": len(neg), "mean_pos": float(np.mean(pos)),
                          "mean_neg": float(np.mean(neg))})  # fmt: skip
            print(json.dumps(curve[-1]), flush=True)
        if step == args.steps:
            break
        model.train()
        train.set_epoch(step)
        batch = collate_clips([train[int(rng.choice(train_ids))]])
        loss, _ = clip_loss(model, batch, scratch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "curve": curve}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
