"""Synthetic CTC data for pre-training the shipped ``demo`` model (scripts/pretrain_demo_model.sh).

Several imaging styles are generated with the project's own generators and merged into one CTC
tree (``OUT/{train,val,test}/CTC/01..NN`` + ``_GT``), so one ``cellsam2 train`` run sees all of
them. ``--held-out`` writes the style kept out of pre-training instead (for the fine-tuning
experiment of docs/results/demo_model.md). Deterministic by ``--seed``; test movies use seeds that
training never sees.

    python scripts/make_demo_data.py --out data/demo-pretrain [--seed 0] [--held-out]
        [--styles mother-machine,nuclei-sparse]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from napari_cellsam2.datasets import write_dataset

# (name, generator kind, sequences per split (train, val, test), frames, generator options)
STYLES = [
    ("nuclei-sparse", "nuclei", (8, 1, 2), 24, {"n_cells": 6, "radius": 9.0}),
    ("nuclei-dense", "nuclei", (8, 1, 2), 24, {"n_cells": 16, "radius": 8.0}),
    ("mother-machine", "mother-machine", (8, 1, 2), 30, {"height": 128, "width": 32}),
    # the shape of the napari sample (datasets.sample): long trenches, thinner at the model size
    ("mother-machine-long", "mother-machine", (8, 1, 2), 30, {"height": 256, "width": 32}),
]
# Kept out of pre-training: a phase-contrast look (inverted contrast: dark cells on a bright
# trench) and wider cells than the pre-training trenches.
HELD_OUT = [
    (
        "mother-machine-phase",
        "mother-machine",
        (4, 1, 2),
        30,
        {"height": 128, "width": 48, "invert": True},
    ),
]


def write_mixture(out: Path, styles: list, seed: int) -> dict[str, list[str]]:
    """Write every style, then merge their sequences per split under ``out``; returns which
    style each merged sequence came from."""
    origin: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        for index, (name, kind, splits, frames, options) in enumerate(styles):
            write_dataset(
                Path(tmp) / name,
                kind,
                sequences=sum(splits),
                frames=frames,
                seed=seed * 100 + index,
                splits=splits,
                **options,
            )
            for split in ("train", "val", "test"):
                target = out / split / "CTC"
                target.mkdir(parents=True, exist_ok=True)
                for seq in sorted((Path(tmp) / name / split / "CTC").glob("[0-9][0-9]")):
                    number = f"{len(origin.setdefault(split, [])) + 1:02d}"
                    shutil.copytree(seq, target / number)
                    shutil.copytree(seq.with_name(seq.name + "_GT"), target / f"{number}_GT")
                    origin[split].append(f"{number}: {name} ({seq.name})")
    return origin


def movies_by_style(root: Path, split: str = "test") -> list[tuple[str, Path]]:
    """(style, sequence folder) of each movie of ``split``, in the order of ``root/styles.txt``
    (lines ``SPLIT/NN: STYLE (k)``, written by this script and by make_real_split.py)."""
    movies = []
    for line in (root / "styles.txt").read_text().splitlines():
        where, described = line.split(": ", 1)
        part, name = where.split("/")
        if part == split:
            movies.append((described.split(" (")[0], root / split / "CTC" / name))
    return movies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument(
        "--styles", help="comma-separated subset of the pre-training styles (default: all)"
    )
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    styles = HELD_OUT if args.held_out else STYLES
    if args.styles:
        wanted = args.styles.split(",")
        unknown = sorted(set(wanted) - {name for name, *_ in styles})
        if unknown:
            raise SystemExit(f"unknown style(s) {unknown}; choose from {[s[0] for s in styles]}")
        styles = [style for style in styles if style[0] in wanted]
    origin = write_mixture(args.out, styles, args.seed)
    lines = [f"{split}/{entry}" for split, entries in origin.items() for entry in entries]
    (args.out / "styles.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {sum(map(len, origin.values()))} sequences to {args.out}")


if __name__ == "__main__":
    main()
