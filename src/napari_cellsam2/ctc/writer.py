"""Write CTC folders atomically: images, GT (TRA + SEG) and results (RES).

Everything is validated before the first byte is written, written into a temporary sibling folder
and renamed into place, so a failure never leaves a half-written folder and an existing folder is
replaced only by a complete one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile

from .errors import CTCFormatError
from .lineage import Lineage


def frame_digits(first_frame: int, count: int) -> int:
    """CTC uses 3-digit names, 4 once a frame index reaches 1000."""
    return 4 if first_frame + count - 1 >= 1000 else 3


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_folder(
    target: str | Path, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` only if the block succeeds.

    An existing ``target`` is replaced only when every entry in it satisfies ``replaceable``
    (e.g. an earlier result of the same kind), so a mistyped output path can never delete a
    sequence or hand-made ground truth. The new folder gets the usual permissions (umask).
    """
    target = Path(target)
    if target.exists():
        foreign = (
            [p.name for p in target.iterdir() if replaceable is None or not replaceable(p)]
            if target.is_dir()
            else []
        )
        if not target.is_dir() or foreign:
            raise CTCFormatError(
                target,
                f"exists and holds other files ({', '.join(sorted(foreign)[:3]) or 'a file'}); "
                "refusing to replace it: choose a new folder or an earlier output of this kind",
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            folder.chmod(0o777 & ~_umask())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a small text file so readers see the old or the new content, never half of it;
    it gets the usual permissions (umask), like the folders above."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _frames_of(prefix: str, *extra: str) -> Callable[[Path], bool]:
    """Entries an earlier output of one kind may hold: its frames and the named extras."""
    pattern = re.compile(rf"^{prefix}\d{{3,4}}\.tiff?$")
    return lambda p: bool(pattern.match(p.name)) or p.name in extra


def as_label_stack(labels, source: str | Path = "<labels>") -> np.ndarray:
    """Check a (T,Y,X) label stack and return it as the smallest unsigned CTC dtype."""
    arr = np.asarray(labels)
    if arr.ndim not in (3, 4):
        raise CTCFormatError(source, f"labels must be (T,Y,X) or (T,Z,Y,X), got shape {arr.shape}")
    if arr.dtype.kind not in "ui" and arr.dtype != bool:
        raise CTCFormatError(source, f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise CTCFormatError(source, f"labels contain negative values (min {arr.min()})")
    top = int(arr.max()) if arr.size else 0
    return arr.astype(np.uint16 if top < 2**16 else np.uint32, copy=False)


Progress = tuple[int, int]  # (frames written, frames to write)
T = TypeVar("T")


def _frame_writes(folder: Path, prefix: str, stack, indices: Sequence[int], digits: int):
    """Write frames one by one, yielding after each (the callers count progress)."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame, idx in zip(stack, indices, strict=True):
        tifffile.imwrite(
            folder / f"{prefix}{idx:0{digits}d}.tif", np.asarray(frame), compression="zlib"
        )
        yield


def run_to_end(steps: Generator[Progress, None, T]) -> T:
    """Drive one of the ``iter_write_*`` generators to the end and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def iter_write_images(
    folder: str | Path, images, first_frame: int = 0
) -> Generator[Progress, None, Path]:
    """:func:`write_images`, yielding progress after each frame; closing the generator early
    (cancel) leaves nothing behind."""
    arr = np.asarray(images)
    if arr.ndim < 3:
        raise CTCFormatError(folder, f"images must be (T,Y,X[,C]), got shape {arr.shape}")
    digits = frame_digits(first_frame, len(arr))
    indices = range(first_frame, first_frame + len(arr))
    with atomic_folder(folder, _frames_of("t")) as tmp:
        for done, _ in enumerate(_frame_writes(tmp, "t", arr, indices, digits), 1):
            yield done, len(arr)
    return Path(folder)


def write_images(folder: str | Path, images, first_frame: int = 0) -> Path:
    """Write a (T,Y,X) image stack as ``t000.tif`` … (4 digits from frame 1000 on)."""
    return run_to_end(iter_write_images(folder, images, first_frame))


def iter_write_res(
    folder: str | Path, labels, lineage: Lineage, first_frame: int = 0
) -> Generator[Progress, None, Path]:
    """:func:`write_res`, yielding progress after each frame; closing the generator early
    (cancel) leaves nothing behind."""
    arr = as_label_stack(labels, folder)
    lineage.validate(arr, source=Path(folder) / "res_track.txt", first_frame=first_frame)
    digits = frame_digits(first_frame, len(arr))
    indices = range(first_frame, first_frame + len(arr))
    with atomic_folder(folder, _frames_of("mask", "res_track.txt")) as tmp:
        for done, _ in enumerate(_frame_writes(tmp, "mask", arr, indices, digits), 1):
            yield done, len(arr)
        lineage.write(tmp / "res_track.txt")
    return Path(folder)


def write_res(folder: str | Path, labels, lineage: Lineage, first_frame: int = 0) -> Path:
    """Write a CTC result: ``mask###.tif`` + ``res_track.txt`` (validated first)."""
    return run_to_end(iter_write_res(folder, labels, lineage, first_frame))


def iter_write_gt(
    gt_folder: str | Path,
    labels,
    lineage: Lineage,
    seg_frames: Sequence[int] | None = None,
    seg_labels=None,
    first_frame: int = 0,
) -> Generator[Progress, None, Path]:
    """:func:`write_gt`, yielding progress after each frame; closing the generator early
    (cancel) leaves nothing behind."""
    gt_folder = Path(gt_folder)
    arr = as_label_stack(labels, gt_folder / "TRA")
    lineage.validate(arr, source=gt_folder / "TRA" / "man_track.txt", first_frame=first_frame)
    seg = arr if seg_labels is None else as_label_stack(seg_labels, gt_folder / "SEG")
    if seg.shape != arr.shape:
        raise CTCFormatError(gt_folder / "SEG", f"SEG shape {seg.shape} != TRA shape {arr.shape}")
    frames = list(seg_frames or [])
    bad = [f for f in frames if not first_frame <= f < first_frame + len(arr)]
    if bad:
        raise CTCFormatError(gt_folder / "SEG", f"SEG frame {bad[0]} outside the sequence")
    digits = frame_digits(first_frame, len(arr))
    total = len(arr) + len(frames)
    with atomic_folder(gt_folder, lambda p: p.is_dir() and p.name in ("TRA", "SEG")) as tmp:
        tra = _frame_writes(
            tmp / "TRA", "man_track", arr, range(first_frame, first_frame + len(arr)), digits
        )
        seg_writes = _frame_writes(
            tmp / "SEG", "man_seg", (seg[f - first_frame] for f in frames), frames, digits
        )
        for done, _ in enumerate(chain(tra, seg_writes if frames else ()), 1):
            yield done, total
        lineage.write(tmp / "TRA" / "man_track.txt")
    return gt_folder


def write_gt(
    gt_folder: str | Path,
    labels,
    lineage: Lineage,
    seg_frames: Sequence[int] | None = None,
    seg_labels=None,
    first_frame: int = 0,
) -> Path:
    """Write ``NN_GT`` with ``TRA/man_track###.tif`` + ``man_track.txt`` and optional SEG.

    ``seg_frames`` are CTC frame indices to store in ``SEG/man_seg###.tif`` (from ``seg_labels``,
    default the TRA labels), so corrected annotations become training and evaluation data.
    """
    return run_to_end(
        iter_write_gt(gt_folder, labels, lineage, seg_frames, seg_labels, first_frame)
    )
