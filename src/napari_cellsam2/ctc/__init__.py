"""CTC (Cell Tracking Challenge) data: lazy reading, lineage rules, atomic writing. Qt-free."""

from .errors import CTCFormatError
from .frames import LazyFrames, PlacedFrames, discover_frames
from .lineage import Lineage, Track, label_presence
from .sequence import (
    CTCDataset,
    CTCSequence,
    GroundTruth,
    TrackedMasks,
    open_dataset,
    open_path,
    open_sequence,
    read_gt,
    read_res,
)
from .writer import write_gt, write_images, write_res

__all__ = [
    "CTCDataset",
    "CTCFormatError",
    "CTCSequence",
    "GroundTruth",
    "LazyFrames",
    "Lineage",
    "PlacedFrames",
    "Track",
    "TrackedMasks",
    "discover_frames",
    "label_presence",
    "open_dataset",
    "open_path",
    "open_sequence",
    "read_gt",
    "read_res",
    "write_gt",
    "write_images",
    "write_res",
]
