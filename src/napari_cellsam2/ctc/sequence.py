"""Open CTC sequences, their ground truth and results, and dataset roots with splits.

Accepted paths: a sequence folder (``01``), its ``01_GT`` or ``01_RES`` folder, a dataset root
holding ``01``, ``02`` …, or a CellSAM2 root ``<name>/{train,val,test}/CTC/01``.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CTCFormatError, CTCWarning
from .frames import (
    IMAGE_PREFIX,
    RES_PREFIX,
    SEG_PREFIX,
    TRA_PREFIX,
    LazyFrames,
    PlacedFrames,
    discover_frames,
)
from .lineage import Lineage, label_presence

SPLITS = ("train", "val", "test")
_SEQ_NAME = re.compile(r"^\d{2,}$")
_IMAGE_FILE = re.compile(r"^t\d{3,4}\.tiff?$")
_SEG_SLICE = re.compile(r"man_seg_\d+_\d+\.tiff?")  # a 2D slice of a 3D frame


@dataclass
class TrackedMasks:
    """Label frames plus their lineage: a GT TRA folder or a RES folder."""

    folder: Path
    masks: LazyFrames
    lineage: Lineage
    lineage_path: Path

    def validate(self) -> None:
        """Read every mask (each read checks its shape and dtype) and check the lineage against
        them (the full CTC check)."""
        self.lineage.validate(presence=_presence(self.masks), source=self.lineage_path)


@dataclass
class GroundTruth:
    """``NN_GT``: TRA (masks + man_track.txt) and SEG on a subset of frames (optional)."""

    folder: Path
    tra: TrackedMasks | None
    seg: LazyFrames | None


@dataclass
class CTCSequence:
    """One sequence: images (may be absent when only GT/RES exist), GT and RES if present."""

    name: str
    folder: Path
    images: LazyFrames | None
    gt: GroundTruth | None = None
    res: TrackedMasks | None = None

    @property
    def first_frame(self) -> int:
        src = self.images or (self.gt.tra.masks if self.gt and self.gt.tra else None)
        return src.indices[0] if src is not None else 0

    @property
    def num_frames(self) -> int:
        src = self.images or (self.gt.tra.masks if self.gt and self.gt.tra else None)
        return len(src) if src is not None else 0

    def seg_placed(self) -> PlacedFrames | None:
        """SEG masks on the full frame range of the sequence (zeros where SEG is absent)."""
        if not self.gt or self.gt.seg is None:
            return None
        return PlacedFrames(self.gt.seg, self.first_frame, self.num_frames)

    def validate(self) -> None:
        """Full check: every frame readable, shapes agree across images/GT/RES, lineages valid."""
        shapes = {}
        if self.images is not None:
            self.images.check_all()
            shapes[self.images.files.folder] = self.images
        for part in (self.gt.tra if self.gt else None, self.res):
            if part is not None:
                part.validate()
                shapes[part.folder] = part.masks
        if self.gt and self.gt.seg is not None:
            self.gt.seg.check_all()
            shapes[self.gt.seg.files.folder] = self.gt.seg
        ref_folder, ref = next(iter(shapes.items()), (None, None))
        for folder, frames in shapes.items():
            if frames.frame_shape != ref.frame_shape:
                raise CTCFormatError(
                    folder,
                    f"frame shape {frames.frame_shape} differs from {ref.frame_shape} "
                    f"in {ref_folder}",
                )
        if self.images is not None and self.gt and self.gt.tra:
            extra = set(self.gt.tra.masks.indices) - set(self.images.indices)
            if extra:
                raise CTCFormatError(
                    self.gt.tra.folder, f"TRA frame {min(extra)} has no image frame"
                )


@dataclass
class CTCDataset:
    """A dataset root: sequences per split (``""`` when the root has no splits)."""

    root: Path
    splits: dict[str, list[CTCSequence]] = field(default_factory=dict)

    def sequences(self, split: str | None = None) -> list[CTCSequence]:
        if split is None:
            return [s for seqs in self.splits.values() for s in seqs]
        if split not in self.splits or not self.splits[split]:
            raise CTCFormatError(self.root, f"split '{split}' has no sequences")
        return self.splits[split]


def _presence(masks: LazyFrames) -> dict[int, list[int]]:
    """label -> CTC frame indices (from file names, not positions)."""
    by_position = label_presence(masks.frame(i) for i in range(len(masks)))
    return {lab: [masks.indices[p] for p in pos] for lab, pos in by_position.items()}


def require_folder(path: Path) -> Path:
    """``path`` if it is a folder; otherwise say whether it is missing or a file (a file is
    the usual slip: a frame or man_track.txt picked instead of its folder)."""
    if not path.exists():
        raise CTCFormatError(path, "folder is missing")
    if not path.is_dir():
        raise CTCFormatError(
            path, f"is a file, not a folder; pass the CTC folder that holds it ({path.parent})"
        )
    return path


def read_images(folder: str | Path) -> LazyFrames:
    return LazyFrames(discover_frames(folder, IMAGE_PREFIX))


def read_tracked(folder: str | Path, prefix: str, lineage_name: str) -> TrackedMasks:
    folder = Path(folder)
    masks = LazyFrames(discover_frames(folder, prefix), labels=True)
    lineage_path = folder / lineage_name
    lineage = Lineage.read(lineage_path)
    lineage.validate(source=lineage_path)
    return TrackedMasks(folder, masks, lineage, lineage_path)


def read_gt(folder: str | Path) -> GroundTruth:
    """Read ``NN_GT`` (TRA required unless SEG alone is present)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CTCFormatError(folder, "ground-truth folder is missing")
    tra_dir, seg_dir = folder / "TRA", folder / "SEG"
    if not tra_dir.is_dir() and not seg_dir.is_dir():
        raise CTCFormatError(folder, "ground-truth folder has neither TRA/ nor SEG/")
    tra = read_tracked(tra_dir, TRA_PREFIX, "man_track.txt") if tra_dir.is_dir() else None
    seg = None
    if seg_dir.is_dir() and _slice_annotations_only(seg_dir):
        # 3D CTC datasets may annotate single slices (man_seg_TTT_ZZZ.tif): not frames
        if tra is None:
            raise CTCFormatError(seg_dir, "holds only 2D slice annotations (man_seg_T_Z.tif)")
        warnings.warn(
            f"{seg_dir} holds only 2D slice annotations (man_seg_T_Z.tif); opened without SEG",
            stacklevel=2,
        )
    elif seg_dir.is_dir():
        seg = LazyFrames(discover_frames(seg_dir, SEG_PREFIX, allow_gaps=True), labels=True)
    return GroundTruth(folder, tra, seg)


def _slice_annotations_only(seg_dir: Path) -> bool:
    names = [p.name for p in seg_dir.iterdir() if p.name.startswith(SEG_PREFIX)]
    return bool(names) and all(_SEG_SLICE.fullmatch(n) for n in names)


def read_res(folder: str | Path) -> TrackedMasks:
    return read_tracked(folder, RES_PREFIX, "res_track.txt")


def open_sequence(path: str | Path) -> CTCSequence:
    """Open a sequence from its image, ``_GT`` or ``_RES`` folder, with siblings that exist."""
    path = require_folder(Path(path))
    if path.name in ("TRA", "SEG") and path.parent.name.endswith("_GT"):
        path = path.parent
    name = re.sub(r"_(GT|ST|RES)$", "", path.name)
    base = path.parent / name
    if not (base.is_dir() or path.name.endswith(("_GT", "_ST", "_RES"))):
        raise CTCFormatError(path, "not a CTC sequence folder")
    images = None
    if base.is_dir() and (path == base or any(base.glob(f"{IMAGE_PREFIX}*.tif*"))):
        images = read_images(base)
    elif base.is_dir():  # e.g. the images are not downloaded yet: open the GT / RES alone
        warnings.warn(
            f"{base} holds no image frames; opening {path.name} without images", stacklevel=2
        )
    gt_dir = base.parent / f"{name}_GT"
    res_dir = path if path.name.endswith("_RES") else base.parent / f"{name}_RES"
    gt = read_gt(gt_dir) if gt_dir.is_dir() else None
    res = read_res(res_dir) if res_dir.is_dir() else None
    if images is None and gt is None and res is None:
        raise CTCFormatError(path, "no images, ground truth or result found")
    return CTCSequence(name, base, images, gt, res)


def has_entry(folder: Path, pattern: re.Pattern[str]) -> bool:
    """True as soon as one entry of ``folder`` matches (stops scanning at the first hit)."""
    try:
        with os.scandir(folder) as entries:
            return any(pattern.match(e.name) for e in entries)
    except OSError:
        return False


def looks_like_sequence(folder: Path) -> bool:
    """A folder named like a sequence (``01``) that holds frames or has a GT/RES beside it;
    judged from names only (no pixel or header reads)."""
    name = folder.name
    return folder.is_dir() and (
        has_entry(folder, _IMAGE_FILE)
        or (folder.parent / f"{name}_GT").is_dir()
        or (folder.parent / f"{name}_RES").is_dir()
    )


def find_sequence_folders(root: str | Path) -> dict[str, list[Path]]:
    """Sequence folders under ``root`` per split; ``{"": [...]}`` for a plain CTC root.

    A folder merely named like one (``05`` holding a CSV, a year ``2024``) is left out with a
    warning: it would otherwise stop the dataset's real sequences from opening."""
    root = require_folder(Path(root))

    def seqs_in(folder: Path) -> list[Path]:
        named = sorted(p for p in folder.iterdir() if p.is_dir() and _SEQ_NAME.match(p.name))
        real = [p for p in named if looks_like_sequence(p)]
        if not real or len(real) == len(named):  # none real: opening them says what is wrong
            return named
        other = ", ".join(p.name for p in named if p not in real)
        warnings.warn(
            f"{folder}: left out {other}: named like a sequence, but no tNNN.tif frames inside "
            "and no _GT or _RES folder beside",
            CTCWarning,
            stacklevel=3,
        )
        return real

    found: dict[str, list[Path]] = {}
    for split in SPLITS:
        split_dir = root / split
        if split_dir.is_dir():
            inner = split_dir / "CTC" if (split_dir / "CTC").is_dir() else split_dir
            found[split] = seqs_in(inner)
    if not found:
        inner = root / "CTC" if (root / "CTC").is_dir() else root
        found[""] = seqs_in(inner)
    if not any(found.values()):
        raise CTCFormatError(root, "no CTC sequence folders (01, 02, …) found")
    return found


def open_dataset(root: str | Path) -> CTCDataset:
    found = find_sequence_folders(root)
    return CTCDataset(Path(root), {s: [open_sequence(p) for p in ps] for s, ps in found.items()})


def open_path(path: str | Path) -> CTCSequence:
    """Open exactly one sequence: a sequence/GT/RES folder or a root holding a single sequence."""
    path = require_folder(Path(path))
    if not any(path.iterdir()):
        raise CTCFormatError(path, "folder is empty")
    if _SEQ_NAME.match(re.sub(r"_(GT|ST|RES)$", "", path.name)) or path.name in ("TRA", "SEG"):
        return open_sequence(path)
    folders = [p for ps in find_sequence_folders(path).values() for p in ps]
    if len(folders) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in folders[:4])
        raise CTCFormatError(
            path,
            f"holds {len(folders)} sequences ({names}…) where one is expected; pass one of them",
        )
    return open_sequence(folders[0])
