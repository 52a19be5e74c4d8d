"""Turn one real annotated CTC sequence into a fine-tuning dataset split in time: issue 10's 5(b).

"Fine-tune on the GT of its first half, then track and score its second half." The frames
``[0, cut)`` give the training movies (and, from their last ``--val-frames``, the validation
movie that picks the checkpoint); the frames ``[cut, end)`` give the test movies, which no model
sees before it is scored. Each part is cut into square windows of ``--tile`` pixels (a 1305 x 1009
phase-contrast frame would be shrunk tenfold to the demo model's 128 px and its bacteria would
vanish; a 256 px window is shrunk only twofold), and only windows that hold cells are kept.

Cutting in space and time breaks tracks, and the written GT must still be valid CTC:
- a cell that leaves a window and comes back, or one that is cut off at a time boundary, is
  re-labelled with :func:`napari_cellsam2.ctc.repair.make_consistent`, the same repair the dock's
  export uses (a later piece becomes a new track whose parent is the piece before);
- a daughter keeps her mother as parent only when the mother is in the same window and part
  right before her; otherwise the link is dropped;
- pieces of a cell smaller than ``--min-area`` pixels at a window edge are erased (a few pixels
  of a cell mostly outside the window; no tracker or annotator could act on them).

The source is read, never written; the output folder is refused if it exists.

Usage: python scripts/make_real_split.py IMAGES TRA OUT [--cut 27] [--tile 256] ...

IMAGES holds the frames ``t*.tif``, TRA the GT ``man_track*.tif`` and ``man_track.txt`` (a CTC
``NN`` and ``NN_GT/TRA`` pair, or any two folders named that way).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_cellsam2.ctc.errors import CTCFormatError
from napari_cellsam2.ctc.frames import discover_frames, read_tiff
from napari_cellsam2.ctc.lineage import Lineage
from napari_cellsam2.ctc.repair import make_consistent
from napari_cellsam2.ctc.writer import write_gt, write_images


def windows(shape: tuple[int, int], tile: int, region: tuple[int, int, int, int]) -> list:
    """Non-overlapping ``tile`` windows (y0, x0) covering ``region`` = (y0, y1, x0, x1), shifted
    inside the frame where the region reaches its edge."""
    y0, y1, x0, x1 = region
    out = []
    for y in range(y0, y1, tile):
        for x in range(x0, x1, tile):
            out.append((min(max(y, 0), shape[0] - tile), min(max(x, 0), shape[1] - tile)))
    return sorted(set(out))


def crop_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    """A copy of a (T, Y, X) window with pieces under ``min_area`` pixels erased, per frame."""
    out = labels.copy()
    for frame in out:
        counts = np.bincount(frame.ravel())
        small = np.nonzero((counts > 0) & (counts < min_area))[0]
        small = small[small > 0]
        if len(small):
            frame[np.isin(frame, small)] = 0
    return out


def write_window(
    root: Path, name: str, images: np.ndarray, labels: np.ndarray, parents: dict[int, int]
) -> dict:
    """One CTC sequence ``root/name`` (+ ``name_GT``, SEG on every frame: the source's TRA masks
    are full segmentations). Returns its counts for the summary."""
    fixed, lineage = make_consistent(labels, parents)
    write_images(root / name, images)
    write_gt(root / f"{name}_GT", fixed, lineage, seg_frames=list(range(len(fixed))))
    tracks = lineage.tracks.values()
    return {
        "frames": len(images),
        "tracks": len(lineage.tracks),
        "divisions": len(
            {t.parent for t in tracks if t.parent and t.begin == lineage.tracks[t.parent].end + 1}
        ),
        "cells_first_frame": int(len(np.unique(fixed[0])) - 1),
        "cells_last_frame": int(len(np.unique(fixed[-1])) - 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="folder of the frames t*.tif")
    parser.add_argument("tra", type=Path, help="folder of the GT man_track*.tif + man_track.txt")
    parser.add_argument("out", type=Path, help="new dataset root (refused if it exists)")
    parser.add_argument("--cut", type=int, default=27, help="first frame of the test half")
    parser.add_argument(
        "--val-frames",
        type=int,
        default=7,
        help="last frames of the first half kept for validation, not training",
    )
    parser.add_argument("--tile", type=int, default=256, help="window size in pixels")
    parser.add_argument(
        "--min-cells",
        type=int,
        default=2,
        help="keep a window when it holds at least this many cells on its first frame",
    )
    parser.add_argument(
        "--min-area",
        type=int,
        default=40,
        help="erase cell pieces smaller than this at window edges (pixels)",
    )
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out}: exists; choose a new folder", file=sys.stderr)
        return 2
    try:
        # published copies do not always keep CTC's 3- or 4-digit frame numbers
        image_files = discover_frames(args.images, "t", digits=None)
        mask_files = discover_frames(args.tra, "man_track", digits=None)
        if image_files.indices != mask_files.indices:
            raise CTCFormatError(args.tra, f"its frames differ from those of {args.images}")
        lineage = Lineage.read(args.tra / "man_track.txt")
        images = np.stack([read_tiff(path) for path in image_files.paths])
        labels = np.stack([read_tiff(path) for path in mask_files.paths])
        lineage.validate(
            labels, source=args.tra / "man_track.txt", first_frame=mask_files.indices[0]
        )
    except CTCFormatError as error:
        print(error, file=sys.stderr)
        return 2
    parents = {t.label: t.parent for t in lineage.tracks.values() if t.parent}
    if not (args.cut - args.val_frames > 0 and args.cut < len(images)):
        print(
            f"--cut {args.cut} / --val-frames {args.val_frames} do not fit {len(images)} frames",
            file=sys.stderr,
        )
        return 2
    parts = {
        "train": (0, args.cut - args.val_frames),
        "val": (args.cut - args.val_frames, args.cut),
        "test": (args.cut, len(images)),
    }
    summary: dict = {
        "source": {"images": str(args.images), "tra": str(args.tra)},
        "args": {k: v for k, v in vars(args).items() if k not in ("images", "tra", "out")},
        "splits": {},
    }
    for split, (a, b) in parts.items():
        occupied = np.nonzero(labels[a:b].any(0))
        region = (
            occupied[0].min(),
            occupied[0].max() + 1,
            occupied[1].min(),
            occupied[1].max() + 1,
        )
        kept = []
        for y, x in windows(images.shape[1:], args.tile, region):
            block = crop_labels(labels[a:b, y : y + args.tile, x : x + args.tile], args.min_area)
            if len(np.unique(block[0])) - 1 < args.min_cells:
                continue
            name = f"{len(kept) + 1:02d}"
            counts = write_window(
                args.out / split / "CTC",
                name,
                images[a:b, y : y + args.tile, x : x + args.tile],
                block,
                parents,
            )
            kept.append({"name": name, "frames": [a, b], "y": int(y), "x": int(x), **counts})
        summary["splits"][split] = kept
        print(
            f"{split}: {len(kept)} window(s), frames {a}-{b - 1}, "
            f"{sum(k['tracks'] for k in kept)} tracks, "
            f"{sum(k['divisions'] for k in kept)} divisions"
        )
    (args.out / "real_split.json").write_text(json.dumps(summary, indent=1) + "\n")
    styles = [  # make_demo_data.py's styles.txt, so scripts that group movies by style read it
        f"{split}/{w['name']}: real ({w['name']})"
        for split, kept in summary["splits"].items()
        for w in kept
    ]
    (args.out / "styles.txt").write_text("\n".join(styles) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
