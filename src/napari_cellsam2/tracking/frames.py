"""The time-lapse as SAM 2 sees it: validated up front, preprocessed one frame at a time.

A :class:`FrameSource` stands in for the video tensor of transformers'
``Sam2VideoInferenceSession`` (its ``processed_frames``): it has the sequence's length and returns
a preprocessed frame on request, so a 1000-frame movie is never held as one float tensor. Only a
couple of preprocessed frames are kept; image features are cached separately (``features.py``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..model.preprocess import IntensityNorm, Letterbox, frames_layout, preprocess_frame


class FrameSource:
    """Frames of a time-lapse, preprocessed for SAM 2 on demand (a small LRU of tensors).

    Acts as the ``processed_frames`` mapping of a transformers inference session: ``len()`` is
    the number of frames and ``source[t]`` the (3, S, S) model input of frame ``t``.
    """

    def __init__(
        self, frames: Any, image_size: int, norm: IntensityNorm, cache_frames: int = 2
    ) -> None:
        if not hasattr(frames, "shape"):
            frames = np.asarray(frames)
        self.num_frames, self.height, self.width = frames_layout(frames)
        self.frames = frames
        self.norm = norm
        self.image_size = int(image_size)
        self.letterbox = Letterbox(self.height, self.width, self.image_size)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))
        self._lock = threading.Lock()  # a prefetch reads frames beside the tracking worker

    def __len__(self) -> int:
        return self.num_frames

    def raw(self, t: int) -> np.ndarray:
        """Frame ``t`` as stored (read from disk for lazy sources)."""
        frame = np.asarray(self.frames[t])
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame {t} has shape {frame.shape}, expected ({self.height}, {self.width}) like "
                "the rest of the sequence"
            )
        return frame

    def __getitem__(self, t: int) -> torch.Tensor:
        with self._lock:
            if t in self._cache:
                self._cache.move_to_end(t)
                return self._cache[t]
        tensor, _ = preprocess_frame(self.raw(t), self.image_size, self.norm)
        with self._lock:
            self._cache[t] = tensor
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
        return tensor

    @property
    def cached(self) -> int:
        """Number of preprocessed frames currently held."""
        return len(self._cache)
