"""How robust is the memory-path overfit of tests/test_training_memory.py across seeds?

    OMP_NUM_THREADS=1 python scripts/overfit_seed_sweep.py --seeds 0 1 2 3 \
        --out docs/results/overfit_seed_sweep.json [--lr 1e-3] [--cut-memory]

The tests run seed 0 (initial weights and dropout) and require a tracked-frame IoU >= 0.9 in
train and eval mode (memory path) and a session IoU >= 0.85 (clicks); the memory-cut control
must stay below 0.5. This runs the same overfits for other seeds (about 2 minutes per seed on
one thread) and prints the IoUs, to show whether the bars hold beyond the seed the tests use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_training_memory as probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--lr", type=float, default=probe.LR)
    parser.add_argument("--cut-memory", action="store_true", help="the memory-cut control")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cut_memory:
        from iou_loss_probe import no_memory

        from napari_cellsam2.training import forward

        forward._memory_conditioned = no_memory
    rows = []
    for seed in args.seeds:
        train_iou, eval_iou = probe._overfit_from_masks(seed=seed, lr=args.lr)
        clicks = (
            None
            if args.cut_memory
            else float(probe._session_iou_after_click_overfit(seed=seed, lr=args.lr).mean())
        )
        rows.append(
            {"seed": seed, "lr": args.lr, "train_iou": train_iou, "eval_iou": eval_iou,
             "session_click_iou": clicks, "memory_cut": args.cut_memory}
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
