"""Write synthetic datasets in the CellSAM2 layout: ``out/{train,val,test}/CTC/NN`` + ``NN_GT``.

Split rule: every split gets at least one sequence, so ``sequences`` must be
>= 3. By default validation and test each get ``max(1, round(0.1 * sequences))``
sequences and training gets the rest (3 -> 1/1/1, 5 -> 3/1/1, 20 -> 16/2/2);
pass ``splits=(n_train, n_val, n_test)`` to choose. Each sequence's seed is
derived from ``(seed, split, index)`` only, so adding training sequences
never changes the validation or test data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_cellsam2.ctc.lineage import Lineage
from napari_cellsam2.ctc.sequence import SPLITS
from napari_cellsam2.ctc.writer import atomic_folder, backup_path, write_gt, write_images
from napari_cellsam2.datasets.mother_machine import mother_machine
from napari_cellsam2.datasets.nuclei import nuclei_field
from napari_cellsam2.datasets.sequence import SyntheticSequence

Kind = Literal["mother-machine", "nuclei"]
GENERATORS: dict[str, Callable[..., SyntheticSequence]] = {
    "mother-machine": mother_machine,
    "nuclei": nuclei_field,
}
METADATA_FILE = "synthetic.json"


def split_counts(sequences: int) -> tuple[int, int, int]:
    """Default (train, val, test) sequence counts; see the module docstring for the rule."""
    if sequences < 3:
        raise ValueError(
            f"sequences must be >= 3 so that train, val and test each get one, got {sequences}"
        )
    held_out = max(1, round(0.1 * sequences))
    return sequences - 2 * held_out, held_out, held_out


def sequence_seed(seed: int, split: str, index: int) -> int:
    """Deterministic generator seed of sequence ``index`` (0-based) of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])


def seg_frame_indices(frames: int, seg_every: int) -> list[int]:
    """Frames that get SEG ground truth: every ``seg_every``-th, starting with frame 0."""
    return list(range(0, frames, seg_every))


def write_sequence(folder: Path, name: str, sequence: SyntheticSequence, seg_every: int) -> None:
    """Write one sequence as CTC ``folder/name`` (images) and ``folder/name_GT`` (TRA + SEG)."""
    lineage = Lineage.from_labels(sequence.labels, sequence.parents)
    write_images(folder / name, sequence.images)
    write_gt(
        folder / f"{name}_GT",
        sequence.labels,
        lineage,
        seg_frames=seg_frame_indices(sequence.frames, seg_every),
        seg_labels=sequence.seg,
    )


def write_dataset(
    out: str | Path,
    kind: Kind,
    sequences: int = 3,
    frames: int = 60,
    seed: int = 0,
    *,
    splits: tuple[int, int, int] | None = None,
    seg_every: int = 5,
    overwrite: bool = False,
    invert: bool = False,
    **generator_options: Any,
) -> Path:
    """Generate ``sequences`` synthetic sequences of ``kind`` and write them under ``out``.

    ``invert`` flips the contrast of every movie (:func:`inverted`: a phase-contrast look).
    ``generator_options`` go to the generator (e.g. ``height=128`` or
    ``n_cells=12``). The dataset is built in a temporary folder beside
    ``out`` and renamed into place at the end; a non-empty ``out`` is only
    replaced with ``overwrite=True``. Returns ``out``.
    """
    out = Path(out)
    if kind not in GENERATORS:
        raise ValueError(f"kind must be one of {sorted(GENERATORS)}, got {kind!r}")
    counts = split_counts(sequences) if splits is None else tuple(int(n) for n in splits)
    if len(counts) != len(SPLITS) or min(counts) < 1 or sum(counts) != sequences:
        raise ValueError(
            f"splits must be {len(SPLITS)} counts (train, val, test), each >= 1, summing to "
            f"sequences={sequences}; got {splits}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if seg_every < 1:
        raise ValueError(f"seg_every must be >= 1, got {seg_every}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
    kept = (*SPLITS, METADATA_FILE)  # overwrite replaces an earlier dataset, nothing else
    foreign = sorted(p.name for p in out.iterdir() if p.name not in kept) if out.is_dir() else []
    if foreign:
        raise FileExistsError(
            f"{out} holds other files ({', '.join(foreign[:3])}); refusing to replace it: "
            "choose a new folder or an earlier synthetic dataset"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise FileExistsError(
            f"{out} holds a dataset this package did not generate (no {METADATA_FILE}): "
            "refusing to replace it; choose a new folder"
        )

    generate = GENERATORS[kind]
    # an earlier dataset is kept in a dated backup: results or corrections saved inside it
    # (a 01_RES beside its sequence) are the user's
    existing = backup_path(out) if out.is_dir() and any(out.iterdir()) else "refuse"
    with atomic_folder(out, lambda p: p.name in kept, existing) as tmp:
        seeds: dict[str, int] = {}
        for split, count in zip(SPLITS, counts, strict=True):
            for index in range(count):
                name = f"{index + 1:02d}"
                seeds[f"{split}/{name}"] = sequence_seed(int(seed), split, index)
                synthetic = generate(
                    frames=frames, seed=seeds[f"{split}/{name}"], **generator_options
                )
                if invert:
                    synthetic = replace(synthetic, images=inverted(synthetic.images))
                write_sequence(tmp / split / "CTC", name, synthetic, seg_every)
        metadata = {
            "kind": kind,
            "seed": int(seed),
            "frames": frames,
            "seg_every": seg_every,
            "invert": invert,
            "generator_options": generator_options,
            "sequence_seeds": seeds,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    if isinstance(existing, Path):
        warnings.warn(f"{out}: the earlier dataset was moved to {existing}", stacklevel=2)
    return out


def inverted(images: np.ndarray) -> np.ndarray:
    """The movie with inverted contrast (v -> max + min - v over the whole movie): dark cells
    on a bright background, the phase-contrast look of many mother-machine and bacteria movies;
    intensity range and dtype are kept."""
    lo, hi = int(images.min()), int(images.max())
    return (hi + lo - images.astype(np.int64)).astype(images.dtype)
