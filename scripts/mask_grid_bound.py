"""How much SEG the decoder's mask grid allows: each GT cell reduced to the grid and enlarged back.

    python scripts/mask_grid_bound.py --data DATA [--resolutions 128,256] [--frames 3]

SAM 2's decoder predicts masks at a quarter of the model resolution S. A frame is scaled (aspect
kept) into the top-left of the S x S canvas, the mask comes back on the S/4 grid and is enlarged
bilinearly to the frame and thresholded. Here each GT cell of the first ``--frames`` SEG frames of
every test movie of ``DATA`` (make_demo_data.py's layout) takes that path with the best mask the
grid can hold (the area average of the cell, threshold 0.5), and its IoU with the GT is the bound.
Prints the mean IoU per style and resolution. It is an upper bound on mask quality from the grid
alone, not a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from make_demo_data import movies_by_style


def _bound(label: np.ndarray, cell: int, size: int) -> float:
    height, width = label.shape
    scale = size / max(height, width)
    h, w = round(height * scale), round(width * scale)
    mask = torch.from_numpy((label == cell).astype(np.float32))[None, None]
    canvas = torch.zeros(1, 1, size, size)
    canvas[..., :h, :w] = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
    grid = F.interpolate(canvas, size=(size // 4, size // 4), mode="area")
    back = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    back = F.interpolate(back[..., :h, :w], size=(height, width), mode="bilinear")
    got, gt = back[0, 0].numpy() > 0.5, label == cell
    return float((got & gt).sum() / (got | gt).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--resolutions", default="128,256")
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    styles: dict[str, list[Path]] = {}
    for style, seq in movies_by_style(args.data):
        styles.setdefault(style, []).append(seq.with_name(f"{seq.name}_GT") / "SEG")
    print("| style | " + " | ".join(f"{r} px" for r in args.resolutions.split(",")) + " |")
    print("|---|" + "---|" * len(args.resolutions.split(",")))
    for style, folders in styles.items():
        row = []
        for size in map(int, args.resolutions.split(",")):
            ious = [
                _bound(label, cell, size)
                for folder in folders
                for label in map(tifffile.imread, sorted(folder.glob("*.tif"))[: args.frames])
                for cell in np.unique(label)[1:]
            ]
            row.append(f"{np.mean(ious):.3f}")
        print(f"| {style} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
