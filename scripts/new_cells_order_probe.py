"""A cell prompted mid-movie, with new-cell detection: is it tracked, or found a second time?

    python scripts/new_cells_order_probe.py --out docs/results/new_cells_order_probe.json

One fresh synthetic nuclei movie (``write_dataset(..., "nuclei", frames=12, seed=3, n_cells=6,
radius=9)``, its test movie). GT cell 4 is erased from frames 0-4 (painted over with the
background's median), so it appears on frame 5; cells 1, 2, 3, 5 and 6 get a click at their
centroid on frame 0 and cell 4 one on frame 5. The ``demo`` model tracks with divisions off and
new cells searched every 2 frames, in two orders:

- ``forward_first``: ``track_with_new_cells(direction="both")``, the tracker's order (the given
  prompts forward, then backward, then the forward pass with detection);
- ``backward_first``: ``session.propagate("backward")``, then
  ``track_with_new_cells(direction="forward")``, the order "both" had before.

For each it records object 4's area on every frame and the added objects whose mask lies mostly
(> 50 %) on GT cell 4, with their areas: a second ID on the cell.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_cellsam2.ctc import open_path
from napari_cellsam2.datasets import write_dataset
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import TrackingSession, track_with_new_cells

LATE_CELL, LATE_FRAME, EVERY = 4, 5, 2


def _movie(root: Path) -> tuple[np.ndarray, np.ndarray]:
    data = write_dataset(root / "nuc", "nuclei", frames=12, seed=3, n_cells=6, radius=9)
    seq = open_path(data / "test" / "CTC" / "01")
    images = np.stack([np.asarray(seq.images[t]) for t in range(len(seq.images))])
    gt = np.stack([np.asarray(seq.gt.tra.masks[t]) for t in range(len(images))])
    background = np.median(images[0][gt[0] == 0])
    for t in range(LATE_FRAME):  # the cell enters on LATE_FRAME
        images[t][ndi.binary_dilation(gt[t] == LATE_CELL, iterations=3)] = background
    return images, gt


def _track(model, images: np.ndarray, gt: np.ndarray, order: str) -> dict:
    session = TrackingSession(model, images, divisions="off")
    for cell, frame in [(c, 0) for c in (1, 2, 3, 5, 6)] + [(LATE_CELL, LATE_FRAME)]:
        y, x = np.argwhere(gt[frame] == cell).mean(0)
        session.add_points(cell, frame, [[x, y]], [1])
    if order == "backward_first":
        list(session.propagate("backward"))
        with warnings.catch_warnings():  # the forward-only warning names this very case
            warnings.simplefilter("ignore", UserWarning)
            run = track_with_new_cells(session, EVERY, direction="forward")
    else:
        run = track_with_new_cells(session, EVERY, direction="both")
    list(run)
    labels = session.labels

    def areas(oid: int) -> dict[int, int]:
        return {t: int((labels[t] == oid).sum()) for t in range(len(labels))}

    doubles = {
        oid: areas(oid)
        for oid in run.new_ids
        if any((gt[t][labels[t] == oid] == LATE_CELL).mean() > 0.5 for t in range(len(labels))
               if (labels[t] == oid).any())
    }  # fmt: skip
    return {"late_cell_areas": areas(LATE_CELL), "second_ids_on_it": doubles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = load_model("demo", "cpu").model
    with tempfile.TemporaryDirectory() as tmp:
        images, gt = _movie(Path(tmp))
    orders = ("backward_first", "forward_first")
    result = {
        "gt_areas": {t: int((gt[t] == LATE_CELL).sum()) for t in range(len(gt))},
        **{order: _track(model, images, gt, order) for order in orders},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for order in orders:
        r = result[order]
        print(f"{order}: cell {LATE_CELL} areas {r['late_cell_areas']}; second IDs on it: "
              f"{r['second_ids_on_it'] or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
