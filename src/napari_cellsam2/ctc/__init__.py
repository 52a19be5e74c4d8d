"""CTC (Cell Tracking Challenge) data: lazy reading, lineage rules, atomic writing. Qt-free."""

from .errors import CTCFormatError, CTCWarning, OutputExistsError
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
from .writer import backup_path, check_output, write_gt, write_images, write_res

__all__ = [
    "CTCDataset",
    "CTCFormatError",
    "CTCSequence",
    "CTCWarning",
    "GroundTruth",
    "LazyFrames",
    "Lineage",
    "OutputExistsError",
    "PlacedFrames",
    "Track",
    "TrackedMasks",
    "backup_path",
    "check_output",
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
