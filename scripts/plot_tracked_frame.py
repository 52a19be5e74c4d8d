"""One test frame with the GT outlines and the outlines of several tracking results, side by side.

    python scripts/plot_tracked_frame.py SEQ --frame 10 \
        --res zero-shot=RUN/zero-shot/res/gt/01_RES --res full=RUN/full/res/gt/01_RES --out FIG.png

SEQ is a CTC sequence folder (``NN`` with ``NN_GT`` beside it); each ``--res`` is NAME=FOLDER of a
CTC result (``mask###.tif``). Used for the real-data fine-tuning figure in docs/results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tifffile
from skimage.segmentation import find_boundaries


def _overlay(image: np.ndarray, labels: np.ndarray, colour: tuple[float, float, float]):
    low, high = np.percentile(image, (0.5, 99.5))
    grey = np.clip((image.astype(float) - low) / max(high - low, 1e-9), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(labels, mode="inner")] = colour
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sequence", type=Path)
    parser.add_argument("--frame", type=int, default=10)
    parser.add_argument("--res", action="append", default=[], help="NAME=FOLDER, repeatable")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    digits = len(next(args.sequence.glob("t*.tif")).stem) - 1
    name = f"{args.frame:0{digits}d}"
    image = tifffile.imread(args.sequence / f"t{name}.tif")
    gt = args.sequence.with_name(args.sequence.name + "_GT") / "TRA" / f"man_track{name}.tif"
    panels = [("ground truth", tifffile.imread(gt), (0.1, 0.9, 0.1))]
    for item in args.res:
        label, folder = item.split("=", 1)
        panels.append((label, tifffile.imread(Path(folder) / f"mask{name}.tif"), (1, 0.2, 0.2)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2))
    for ax, (title, labels, colour) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(_overlay(image, labels, colour))
        ax.set_title(f"{title} ({len(np.unique(labels)) - 1} objects)")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)


if __name__ == "__main__":
    main()
