"""Frame discovery from CTC file names and a lazy (T, ...) array over TIFF files.

Frame indices come from the names (``t000``/``t0000``, any start), never from positions, so a
sequence that starts at frame 5 or has 1000+ frames keeps its numbering.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .errors import CTCFormatError

# Prefixes of the CTC file kinds: images, TRA, SEG and result masks.
IMAGE_PREFIX = "t"
TRA_PREFIX = "man_track"
SEG_PREFIX = "man_seg"
RES_PREFIX = "mask"


@dataclass(frozen=True)
class FrameFiles:
    """The frames of one kind found in a folder: sorted indices and their files."""

    folder: Path
    prefix: str
    indices: tuple[int, ...]
    paths: tuple[Path, ...]
    digits: int

    @property
    def gaps(self) -> list[int]:
        """Frame indices missing between the first and the last."""
        if not self.indices:
            return []
        have = set(self.indices)
        return [i for i in range(self.indices[0], self.indices[-1] + 1) if i not in have]


def discover_frames(
    folder: str | Path,
    prefix: str,
    *,
    allow_gaps: bool = False,
    digits: tuple[int, ...] | None = (3, 4),
) -> FrameFiles:
    """Find ``<prefix>NNN.tif`` files in ``folder``; errors name the folder and the problem.

    ``digits``: the frame-number lengths allowed (CTC's 3 or 4); None takes any length, for
    published copies of CTC data that renumbered their files (one length per folder still)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CTCFormatError(folder, "folder is missing")
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.tiff?$")
    found: dict[int, Path] = {}
    digit_counts: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        m = pattern.match(path.name)
        if not m:
            continue
        number = m.group(1)
        if digits is not None and len(number) not in digits:
            lengths = " or ".join(map(str, digits))
            raise CTCFormatError(path, f"frame number must have {lengths} digits, got {number!r}")
        digit_counts.setdefault(len(number), path)
        idx = int(number)
        if idx in found:
            raise CTCFormatError(path, f"frame {idx} also stored as {found[idx].name}")
        found[idx] = path
    if not found:
        raise CTCFormatError(folder, f"no '{prefix}NNN.tif' frames in folder (empty or wrong kind)")
    if len(digit_counts) > 1:
        (short, a), (long, b), *_ = sorted(digit_counts.items())
        raise CTCFormatError(
            folder, f"mixed {short}- and {long}-digit frame names (e.g. {a.name} and {b.name})"
        )
    indices = tuple(sorted(found))
    files = FrameFiles(
        folder, prefix, indices, tuple(found[i] for i in indices), next(iter(digit_counts))
    )
    if not allow_gaps and files.gaps:
        gaps = files.gaps
        shown = ", ".join(map(str, gaps[:5])) + (" ..." if len(gaps) > 5 else "")
        raise CTCFormatError(folder, f"gaps in frame numbering: missing frame(s) {shown}")
    return files


def read_tiff(path: Path) -> np.ndarray:
    """Read one TIFF, turning any decoder failure into a :class:`CTCFormatError`."""
    try:
        return tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for corrupt input
        raise CTCFormatError(path, f"corrupt or truncated TIFF ({exc})") from exc


def tiff_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a TIFF's first series without reading its pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except Exception as exc:
        raise CTCFormatError(path, f"corrupt or truncated TIFF ({exc})") from exc


def check_label_frame(path: Path, frame: np.ndarray) -> None:
    """Label images must be non-negative integers."""
    if frame.dtype.kind not in "ui":
        raise CTCFormatError(path, f"label image must be integer, got dtype {frame.dtype}")
    if frame.dtype.kind == "i" and frame.size and frame.min() < 0:
        raise CTCFormatError(path, f"label image has negative values (min {frame.min()})")


class FrameArray:
    """Numpy-style indexing over frames read on demand: what napari and the tracker need from a
    lazy (T, ...) stack. Subclasses set ``frame_shape`` and ``dtype`` and implement ``_read``.

    Assignment (napari's paint, fill and erase tools) is copy-on-write per frame: an edited
    frame is kept in memory and read from there, the files are never touched, and a 1000-frame
    movie costs one frame of memory per frame painted.
    """

    frame_shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, position: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def edited(self) -> dict[int, np.ndarray]:
        """Position -> the frame as edited (empty until something is painted)."""
        return self.__dict__.setdefault("_edits", {})

    def frame(self, position: int) -> np.ndarray:
        """The frame at ``position`` (0-based position, not CTC index), with any edits."""
        edited = self.edited.get(position)
        return edited if edited is not None else self._read(position)

    def _position(self, index) -> int:
        pos = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= pos < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        return pos

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.frame_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __iter__(self):
        for i in range(len(self)):
            yield self.frame(i)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):  # a copy: napari writes into its slice
            out = self.frame(self._position(first))
            return np.array(out[rest] if rest else out)
        if isinstance(first, slice):
            positions = range(len(self))[first]
            if not len(positions):
                return np.zeros((0, *self.frame_shape), self.dtype)
            stack = np.stack([self.frame(p) for p in positions])
            return stack[(slice(None), *rest)] if rest else stack
        # index arrays (napari reads the points it paints as (frames, ys, xs)) or a frame mask:
        # numpy's advanced indexing over the distinct frames, each read once
        positions, place = self._frames_hit(first)
        if not positions:
            return np.zeros((0, *self.frame_shape), self.dtype)[(slice(None), *rest)]
        stack = np.stack([self.frame(p) for p in positions])
        return stack[(place, *rest)]

    def _frames_hit(self, first) -> tuple[list[int], np.ndarray]:
        """Index arrays over the frames (negative ones count from the end) or a frame mask: the
        distinct frame positions hit, sorted and each checked once, and every index's place
        among them."""
        wanted = np.asarray(first)
        if wanted.dtype == bool:
            wanted = np.flatnonzero(wanted)
        raw, inverse = np.unique(wanted, return_inverse=True)
        mapped = np.array([self._position(p) for p in raw], int)  # -1 and T-1: the same frame
        frames, slot = np.unique(mapped, return_inverse=True)
        return frames.tolist(), slot[inverse].reshape(wanted.shape)

    def __setitem__(self, key, value) -> None:
        """``stack[key] = value`` with numpy semantics, applied to copies of the frames hit."""
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            positions, local = [self._position(first)], (0, *rest)
        elif isinstance(first, slice):
            positions, local = list(range(len(self))[first]), (slice(None), *rest)
        elif np.asarray(first).dtype == bool:  # a mask over frames
            positions, local = list(np.flatnonzero(first)), (slice(None), *rest)
        else:  # one frame index per point, as napari paints
            positions, place = self._frames_hit(first)
            local = (place, *rest)
        if not positions:
            return
        stack = np.stack([np.array(self.frame(p)) for p in positions])
        stack[local] = value
        for i, p in enumerate(positions):
            self.edited[p] = stack[i]

    def __array__(self, dtype=None, copy=None):
        arr = self[:]
        return arr.astype(dtype) if dtype is not None else arr


class LazyFrames(FrameArray):
    """A (T, ...) array-like over frame files, read on demand with a small LRU cache.

    Opening reads only the first file's header, so a 1000-frame sequence opens instantly; napari
    and the tracker index it like a numpy array. Edits stay in memory (see :class:`FrameArray`).
    """

    def __init__(self, files: FrameFiles, *, labels: bool = False, cache_size: int = 16) -> None:
        self.files = files
        self.labels = labels
        frame_shape, dtype = tiff_header(files.paths[0])
        if labels and dtype.kind not in "ui":
            raise CTCFormatError(files.paths[0], f"label image must be integer, got dtype {dtype}")
        self.frame_shape = frame_shape
        self.dtype = dtype
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # napari reads on the main thread while workers track/train

    @property
    def indices(self) -> tuple[int, ...]:
        return self.files.indices

    def __len__(self) -> int:
        return len(self.files.paths)

    def __repr__(self) -> str:
        return f"LazyFrames({self.files.folder}, shape={self.shape}, dtype={self.dtype})"

    def _read(self, position: int) -> np.ndarray:
        """The file's frame at ``position``, checked and cached."""
        with self._lock:
            if position in self._cache:
                self._cache.move_to_end(position)
                return self._cache[position]
        path = self.files.paths[position]
        data = read_tiff(path)
        if data.shape != self.frame_shape:
            raise CTCFormatError(
                path,
                f"frame shape {data.shape} differs from {self.frame_shape} "
                f"of {self.files.paths[0].name}",
            )
        if self.labels:
            check_label_frame(path, data)
        data.setflags(write=False)
        with self._lock:
            self._cache[position] = data
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    def check_all(self) -> None:
        """Read every frame: shapes, decodability and (for labels) dtype/sign. Slow by design."""
        for i in range(len(self)):
            self.frame(i)


class PlacedFrames(FrameArray):
    """Frames on some indices only (CTC SEG) placed on a full frame range; zeros elsewhere."""

    def __init__(self, frames: LazyFrames, first: int, count: int) -> None:
        self.frames = frames
        self.first = first
        self.count = count
        self._placed = {idx: pos for pos, idx in enumerate(frames.indices)}
        self.dtype = frames.dtype
        self.frame_shape = frames.frame_shape

    def __len__(self) -> int:
        return self.count

    def _read(self, position: int) -> np.ndarray:
        pos = self._placed.get(self.first + position)
        if pos is None:
            return np.zeros(self.frame_shape, self.dtype)
        return self.frames.frame(pos)
