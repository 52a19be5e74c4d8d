"""Write CTC folders atomically: images, GT (TRA + SEG) and results (RES).

Everything is validated before the first byte is written, written into a temporary sibling folder
and renamed into place, so a failure never leaves a half-written folder and an existing folder is
replaced only by a complete one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import tifffile

from .errors import CTCFormatError, OutputExistsError
from .lineage import Lineage


def frame_digits(first_frame: int, count: int) -> int:
    """CTC uses 3-digit names, 4 once a frame index reaches 1000."""
    return 4 if first_frame + count - 1 >= 1000 else 3


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


Existing = Literal["refuse", "replace"] | Path
"""What a writer does with an output folder that already holds an earlier output:

* ``"refuse"``: raise :class:`OutputExistsError` (user-facing callers: the user decides);
* ``"replace"``: delete it once the new one is complete (machine-made run folders only);
* a :class:`~pathlib.Path` (see :func:`backup_path`): move it there once the new one is complete,
  so a replaced result or hand-made ground truth can always be recovered.
"""


def backup_path(target: str | Path, when: datetime | None = None) -> Path:
    """A free dated sibling of ``target`` to keep it in, e.g. ``01_GT.backup-20261127-213000``
    (``-2``, ``-3`` … appended when that name is taken)."""
    target = Path(target)
    stem = f"{target.name}.backup-{(when or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    candidate, n = target.with_name(stem), 1
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{stem}-{n}")
    return candidate


def keep_copy(path: str | Path) -> Path | None:
    """Copy an existing file to its :func:`backup_path` before it is replaced (it stays in
    place until then, so a failed replacement loses nothing); returns the copy, or None when
    there was no file."""
    path = Path(path)
    if not path.is_file():
        return None
    kept = backup_path(path)
    shutil.copy2(path, kept)
    return kept


def take_back(target: str | Path, existing: Existing) -> None:
    """Undo a completed write of ``target`` (made with ``existing``) because a write that
    belongs with it failed, e.g. the GEFF beside a RES folder: the new output is removed and
    an earlier one moved to a backup is put back, so the failed action leaves things as they
    were. With ``"replace"`` the earlier output is gone, so the new one stays."""
    target = Path(target)
    if existing == "replace" or not target.exists():
        return
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    if isinstance(existing, Path) and existing.exists():
        os.replace(existing, target)


def check_writable(folder: str | Path) -> None:
    """Fail now, naming the folder, when nothing can be created in ``folder`` (or, while it
    does not exist, in its nearest existing parent, where it would be made).

    Probed by creating (and removing) a hidden folder, since permission bits do not tell the
    whole story (read-only mounts, ACLs, root).
    """
    folder = Path(folder)
    ancestor = next(p for p in [folder, *folder.parents] if p.exists())
    if not ancestor.is_dir():
        raise CTCFormatError(ancestor, "is a file, so no output can be made inside it")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cellsam2-probe-", dir=ancestor))
    except OSError as exc:
        raise CTCFormatError(
            ancestor, f"cannot write here ({exc.strerror}); choose a writable output folder"
        ) from None


def check_output_file(path: str | Path) -> Path:
    """:func:`check_output` for a single file (e.g. JSON scores): not a folder, writable."""
    path = Path(path)
    if path.is_dir():
        raise CTCFormatError(path, "is a folder; give a file name to write")
    check_writable(path.parent)
    return path


def check_output(
    target: str | Path,
    replaceable: Callable[[Path], bool] | None = None,
    existing: Existing = "replace",
) -> Path:
    """Refuse an output folder before any work is done, with the reason.

    ``target`` must not be a file; if it exists, every entry in it must satisfy
    ``replaceable`` (an earlier output of the same kind: a mistyped path can never delete a
    sequence or other data, whatever ``existing`` says) and, with ``existing="refuse"``, it must
    be empty. Its folder must be writable. Returns ``target`` as a :class:`Path`.
    """
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise CTCFormatError(target, "is a file, not a folder; choose a folder to write")
        entries = list(target.iterdir())
        foreign = [p.name for p in entries if replaceable is not None and not replaceable(p)]
        if foreign:
            raise CTCFormatError(
                target,
                f"exists and holds other files ({', '.join(sorted(foreign)[:3])}); "
                "refusing to replace it: choose a new folder or an earlier output of this kind",
            )
        if entries and existing == "refuse":
            raise OutputExistsError(target, "already holds an earlier output; not replacing it")
    check_writable(target.parent)
    return target


@contextmanager
def atomic_folder(
    target: str | Path,
    replaceable: Callable[[Path], bool] | None = None,
    existing: Existing = "replace",
) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` only if the block succeeds.

    :func:`check_output` runs first (an existing ``target`` only ever holds entries that
    satisfy ``replaceable``). The old ``target`` is deleted or, when ``existing`` is a path,
    moved there, only after the new folder is complete. The new folder gets the usual
    permissions (umask).
    """
    target = check_output(target, replaceable, existing)
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
        if existing == "refuse" and any(target.iterdir()):  # filled while we were writing
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputExistsError(target, "already holds an earlier output; not replacing it")
        keep = isinstance(existing, Path)
        old = Path(existing) if keep else target.parent / f".{target.name}.old-{os.getpid()}"
        if not keep:
            shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None and not isinstance(existing, Path):
        shutil.rmtree(old, ignore_errors=True)


def read_json_record(path: str | Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object this package wrote (a checkpoint's or a run's record) with at least
    ``keys``. A missing file raises :class:`FileNotFoundError`; a damaged one (cut off while
    written, edited by hand) a :class:`ValueError` that names it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not readable JSON ({err})") from err
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if not isinstance(record, dict) or missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing) or 'a JSON object'}")
    return record


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a small text file so readers see the old or the new content, never half of it;
    it gets the usual permissions (umask), like the folders above."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _gt_part(entry: Path) -> bool:
    return entry.is_dir() and entry.name in ("TRA", "SEG")


# What an earlier output of each kind holds: only folders holding nothing else are replaced.
IMAGE_ENTRIES = _frames_of("t")
RES_ENTRIES = _frames_of("mask", "res_track.txt")
GT_ENTRIES = _gt_part


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
    if top >= 2**32:  # napari keeps int64 labels: a cast would wrap them onto other cells
        raise CTCFormatError(
            source, f"labels go up to {top}; CTC masks hold labels up to {2**32 - 1}"
        )
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
    folder: str | Path, images, first_frame: int = 0, *, existing: Existing = "replace"
) -> Generator[Progress, None, Path]:
    """:func:`write_images`, yielding progress after each frame; closing the generator early
    (cancel) leaves nothing behind."""
    arr = np.asarray(images)
    if arr.ndim < 3:
        raise CTCFormatError(folder, f"images must be (T,Y,X[,C]), got shape {arr.shape}")
    digits = frame_digits(first_frame, len(arr))
    indices = range(first_frame, first_frame + len(arr))
    with atomic_folder(folder, IMAGE_ENTRIES, existing) as tmp:
        for done, _ in enumerate(_frame_writes(tmp, "t", arr, indices, digits), 1):
            yield done, len(arr)
    return Path(folder)


def write_images(
    folder: str | Path, images, first_frame: int = 0, *, existing: Existing = "replace"
) -> Path:
    """Write a (T,Y,X) image stack as ``t000.tif`` … (4 digits from frame 1000 on); an earlier
    image folder is handled as ``existing`` says (:data:`Existing`)."""
    return run_to_end(iter_write_images(folder, images, first_frame, existing=existing))


def iter_write_res(
    folder: str | Path,
    labels,
    lineage: Lineage,
    first_frame: int = 0,
    *,
    existing: Existing = "refuse",
) -> Generator[Progress, None, Path]:
    """:func:`write_res`, yielding progress after each frame; closing the generator early
    (cancel) leaves nothing behind."""
    arr = as_label_stack(labels, folder)
    lineage.validate(arr, source=Path(folder) / "res_track.txt", first_frame=first_frame)
    digits = frame_digits(first_frame, len(arr))
    indices = range(first_frame, first_frame + len(arr))
    with atomic_folder(folder, RES_ENTRIES, existing) as tmp:
        for done, _ in enumerate(_frame_writes(tmp, "mask", arr, indices, digits), 1):
            yield done, len(arr)
        lineage.write(tmp / "res_track.txt")
    return Path(folder)


def write_res(
    folder: str | Path,
    labels,
    lineage: Lineage,
    first_frame: int = 0,
    *,
    existing: Existing = "refuse",
) -> Path:
    """Write a CTC result: ``mask###.tif`` + ``res_track.txt`` (validated first).

    An earlier RES folder is handled as ``existing`` says (:data:`Existing`): refused by
    default, like GT, since a result may hold hours of corrections; machine-made run folders
    (comparisons) pass ``"replace"``, the CLI and the dock a backup path after asking.
    """
    return run_to_end(iter_write_res(folder, labels, lineage, first_frame, existing=existing))


def iter_write_gt(
    gt_folder: str | Path,
    labels,
    lineage: Lineage,
    seg_frames: Sequence[int] | None = None,
    seg_labels=None,
    first_frame: int = 0,
    *,
    existing: Existing = "refuse",
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
    with atomic_folder(gt_folder, GT_ENTRIES, existing) as tmp:
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
    *,
    existing: Existing = "refuse",
) -> Path:
    """Write ``NN_GT`` with ``TRA/man_track###.tif`` + ``man_track.txt`` and optional SEG.

    ``seg_frames`` are CTC frame indices to store in ``SEG/man_seg###.tif`` (from ``seg_labels``,
    default the TRA labels), so corrected annotations become training and evaluation data.
    Ground truth is hand-made: an existing one is refused unless ``existing`` is a backup path
    (or ``"replace"``), see :data:`Existing`.
    """
    return run_to_end(
        iter_write_gt(
            gt_folder, labels, lineage, seg_frames, seg_labels, first_frame, existing=existing
        )
    )
