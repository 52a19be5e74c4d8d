"""The container every synthetic generator returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyntheticSequence:
    """A rendered time-lapse with its ground truth, ready for CTC export.

    ``labels`` holds the tracking ground truth (one ID per track, the ID is
    the CTC track label). ``seg`` holds the segmentation ground truth; in
    real CTC data TRA may only hold markers, here both are full masks.
    ``parents`` maps every daughter track to its mother track.
    """

    images: np.ndarray
    labels: np.ndarray
    seg: np.ndarray
    parents: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise ValueError(f"images must be (T, Y, X), got shape {self.images.shape}")
        for name in ("labels", "seg"):
            array = getattr(self, name)
            if array.shape != self.images.shape:
                raise ValueError(
                    f"{name} shape {array.shape} differs from images shape {self.images.shape}"
                )
        for name in ("images", "labels", "seg"):
            if getattr(self, name).dtype != np.uint16:
                raise ValueError(f"{name} must be uint16, got {getattr(self, name).dtype}")

    @property
    def frames(self) -> int:
        """Number of time points."""
        return int(self.images.shape[0])
