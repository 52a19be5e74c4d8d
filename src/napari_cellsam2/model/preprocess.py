"""Frame preprocessing shared by inference and training: intensity scaling and letterboxing.

Everything here is pure and deterministic (numpy + torch ops only) so that a model sees exactly
the same pixels when tracking as when it was fine-tuned: two different resize implementations
change SAM 2 logits by ~3e-2, identical ones by ~3e-7.

Geometry. A frame of H x W pixels is resized, aspect preserved, into the top-left corner of the
square S x S model canvas and padded bottom/right (tall, narrow mother-machine frames keep their
shape). Per axis the scale is ``resized / original`` (the long side is exactly ``S / max(H, W)``).
All mappings (image, mask, points, boxes, logits) use the half-pixel-centre convention: original
pixel index ``i`` has its centre at ``(i + 0.5) * scale`` on the canvas, and SAM 2's prompt
encoder adds 0.5 to prompt coordinates, so a point at pixel ``i`` becomes
``(i + 0.5) * scale - 0.5`` (SAM's ``coords * scale`` plus the pixel-centre correction). This
keeps points, masks and images registered to a fraction of a pixel.

Mask round trips (``mask_to_model`` then ``logits_to_original`` of ``2 * mask - 1``) are exact for
any mask when the canvas scale is >= 2 (each pixel keeps >= 56 % of its own weight through the
two bilinear resamplings), exact in practice for cell-like masks when the scale is >= 1, and
lose only boundary pixels when the frame is larger than the canvas (information is lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IntensityNorm",
    "Letterbox",
    "frames_layout",
    "preprocess_frame",
    "preprocess_frames",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.kind not in "uif":
        raise TypeError(
            f"{what} has unsupported dtype {dtype}; expected an integer (e.g. uint8, uint16) "
            "or floating-point image"
        )


@dataclass(frozen=True)
class IntensityNorm:
    """How raw intensities are scaled to [0, 1] before SAM 2's ImageNet normalisation.

    ``percentile`` (default) maps the ``low``/``high`` percentiles to 0/1 and clips, which is robust
    to the hot pixels and wide dynamic range of 16-bit microscopy; ``minmax`` uses the frame's
    extremes; ``dtype`` divides by the integer type's range (floats are assumed to be in [0, 1]).
    Statistics are per frame and over all channels jointly (colour balance is kept). A constant
    frame maps to zeros rather than dividing by zero.
    """

    mode: Literal["percentile", "minmax", "dtype"] = "percentile"
    low: float = 1.0
    high: float = 99.8

    def __post_init__(self) -> None:
        if self.mode not in ("percentile", "minmax", "dtype"):
            raise ValueError(
                f"IntensityNorm.mode must be 'percentile', 'minmax' or 'dtype', got {self.mode!r}"
            )
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(
                f"IntensityNorm needs 0 <= low < high <= 100, got low={self.low}, high={self.high}"
            )

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Scale one frame to float32 in [0, 1]; non-finite values become 0."""
        frame = np.asarray(frame)
        _check_dtype(frame.dtype, "frame")
        if self.mode == "dtype":
            if frame.dtype.kind in "ui":
                info = np.iinfo(frame.dtype)
                lo, hi = float(info.min), float(info.max)
            else:
                lo, hi = 0.0, 1.0
            return self._scale(frame, lo, hi)
        finite = frame[np.isfinite(frame)] if frame.dtype.kind == "f" else frame.ravel()
        if finite.size == 0:
            return np.zeros(frame.shape, np.float32)
        lo, hi = float(finite.min()), float(finite.max())
        if self.mode == "percentile":
            p_lo, p_hi = np.percentile(finite, [self.low, self.high])
            # Sparse bright objects can put both percentiles on the background: fall back to
            # min/max then, so such frames do not become all zero.
            if p_hi > p_lo:
                lo, hi = float(p_lo), float(p_hi)
        return self._scale(frame, lo, hi)

    @staticmethod
    def _scale(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
        if not hi > lo:
            return np.zeros(frame.shape, np.float32)
        out = (frame.astype(np.float64) - lo) / (hi - lo)
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """Maps between an original ``height`` x ``width`` frame and the square ``size`` canvas."""

    height: int
    width: int
    size: int

    def __post_init__(self) -> None:
        for name in ("height", "width", "size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"Letterbox.{name} must be a positive integer, got {value!r}")

    @property
    def scale(self) -> float:
        """Nominal scale ``size / max(height, width)`` (exact on the long side)."""
        return self.size / max(self.height, self.width)

    @property
    def resized_hw(self) -> tuple[int, int]:
        """(rows, cols) the frame occupies on the canvas, anchored top-left."""
        s = self.scale
        return (
            min(self.size, max(1, round(self.height * s))),
            min(self.size, max(1, round(self.width * s))),
        )

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Exact per-axis scales (x, y) used by every mapping; equal to ``scale`` up to rounding."""
        rh, rw = self.resized_hw
        return rw / self.width, rh / self.height

    # ---- points and boxes ------------------------------------------------------------------
    def points_to_model(self, xy: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """(N, 2) x, y pixel positions in the original frame -> model (canvas) pixel coords."""
        pts = self._as_points(xy)
        scale = np.asarray(self.scale_xy)
        return (pts + 0.5) * scale - 0.5

    def points_to_original(self, xy: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Inverse of :meth:`points_to_model`."""
        pts = self._as_points(xy)
        scale = np.asarray(self.scale_xy)
        return (pts + 0.5) / scale - 0.5

    def box_to_model(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Box corners (original pixels) -> ``[x0, y0, x1, y1]`` in model pixels (SAM box order)."""
        corners = self.points_to_model([[x0, y0], [x1, y1]])
        return corners.reshape(4)

    @staticmethod
    def _as_points(xy: Any) -> np.ndarray:
        pts = np.asarray(xy, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"points must be an (N, 2) array of x, y; got shape {pts.shape}")
        return pts

    # ---- rasters ----------------------------------------------------------------------------
    def _check_hw(self, shape: tuple[int, ...], what: str) -> None:
        if tuple(shape[:2]) != (self.height, self.width):
            raise ValueError(
                f"{what} has shape {tuple(shape)}, expected ({self.height}, {self.width}, ...) "
                "for this Letterbox"
            )

    def _resize_pad(self, chw: torch.Tensor) -> torch.Tensor:
        rh, rw = self.resized_hw
        resized = F.interpolate(
            chw[None], size=(rh, rw), mode="bilinear", align_corners=False, antialias=True
        )[0]
        return F.pad(resized, (0, self.size - rw, 0, self.size - rh))

    def image_to_model(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W) or (H, W, C) float image -> (C, S, S) float32 canvas (bilinear, zero padded)."""
        img = torch.as_tensor(np.asarray(frame, dtype=np.float32))
        self._check_hw(tuple(img.shape), "image")
        if img.ndim == 2:
            img = img[None]
        elif img.ndim == 3:
            img = img.permute(2, 0, 1)
        else:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {tuple(img.shape)}")
        return self._resize_pad(img.contiguous())

    def mask_to_model(self, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W) bool/float mask -> (S, S) float32 canvas in [0, 1] (bilinear, zero padded)."""
        m = torch.as_tensor(np.asarray(mask)).to(torch.float32)
        if m.ndim != 2:
            raise ValueError(f"mask must be 2D (H, W), got shape {tuple(m.shape)}")
        self._check_hw(tuple(m.shape), "mask")
        return self._resize_pad(m[None])[0]

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., h, w) logits covering the whole canvas -> (..., H, W) logits on the original grid.

        Equivalent to upsampling to the S x S canvas, cropping the frame's region and resizing it
        to (H, W), but done as one bilinear sampling at each original pixel centre, so no blur is
        added by an intermediate resize. Threshold the result at 0 for the mask.
        """
        if logits.ndim < 2:
            raise ValueError(f"logits must be (..., h, w), got shape {tuple(logits.shape)}")
        lead, (h, w) = logits.shape[:-2], logits.shape[-2:]
        flat = logits.reshape(-1, 1, h, w)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.float()  # bf16 grid coordinates would be off by up to half a percent
        sx, sy = self.scale_xy
        # Normalised canvas coordinate (align_corners=False) of original pixel centre i.
        gx = (torch.arange(self.width, dtype=torch.float64) + 0.5) * (2 * sx / self.size) - 1
        gy = (torch.arange(self.height, dtype=torch.float64) + 0.5) * (2 * sy / self.size) - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)
        grid = grid.to(device=flat.device, dtype=flat.dtype).expand(flat.shape[0], -1, -1, -1)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(*lead, self.height, self.width)


def _frame_to_hwc(frame: np.ndarray, what: str) -> np.ndarray:
    """Validate one frame and return it as (H, W, 1) or (H, W, 3)."""
    _check_dtype(frame.dtype, what)
    if frame.ndim == 2:
        return frame[..., None]
    if frame.ndim == 3 and frame.shape[-1] in (1, 3):
        return frame
    if frame.ndim == 3:
        raise ValueError(
            f"{what} has shape {frame.shape}: looks like a 3D volume (Z, Y, X) or a multi-channel "
            "image; SAM 2 needs 2D greyscale (H, W) or RGB (H, W, 3) frames"
        )
    raise ValueError(
        f"{what} has {frame.ndim} dimensions (shape {frame.shape}); expected a 2D greyscale "
        "(H, W) or RGB (H, W, 3) frame"
    )


def _normalise_imagenet(canvas: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """ImageNet-normalise the frame region; the padding stays 0 (the mean colour, as in SAM)."""
    if canvas.shape[0] == 1:
        canvas = canvas.expand(3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    out = (canvas - mean) / std
    rh, rw = box.resized_hw
    out[:, rh:, :] = 0.0
    out[:, :, rw:] = 0.0
    return out


def preprocess_frame(
    frame: np.ndarray, size: int, norm: IntensityNorm = IntensityNorm()
) -> tuple[torch.Tensor, Letterbox]:
    """One (H, W) greyscale or (H, W, 3) RGB frame -> ((3, S, S) float32 model input, Letterbox).

    Accepts uint8/uint16/other integer and float frames; bool, complex and object arrays are
    rejected, as are 3D volumes.
    """
    arr = _frame_to_hwc(np.asarray(frame), "frame")
    box = Letterbox(int(arr.shape[0]), int(arr.shape[1]), int(size))
    scaled = norm.apply(arr)
    return _normalise_imagenet(box.image_to_model(scaled), box), box


def frames_layout(frames: Any) -> tuple[int, int, int]:
    """(T, Y, X) of a (T, Y, X) or (T, Y, X, 1|3) array-like; clear errors for anything else."""
    shape = tuple(int(s) for s in getattr(frames, "shape", np.shape(frames)))
    dtype = getattr(frames, "dtype", None)
    _check_dtype(np.asarray(frames).dtype if dtype is None else np.dtype(dtype), "frames")
    if len(shape) == 4 and shape[-1] not in (1, 3):
        raise ValueError(
            f"frames have shape {shape}: a 3D volume per time point (T, Z, Y, X) is not "
            "supported; pass a 2D time-lapse (T, Y, X) or RGB (T, Y, X, 3) (e.g. one Z plane "
            "or a projection)"
        )
    if len(shape) not in (3, 4):
        raise ValueError(
            f"frames have {len(shape)} dimensions (shape {shape}); expected a time-lapse "
            "(T, Y, X) or (T, Y, X, 3)"
        )
    if min(shape[:3]) < 1:
        raise ValueError(f"frames are empty (shape {shape})")
    return shape[0], shape[1], shape[2]


def preprocess_frames(
    frames: Any, size: int, norm: IntensityNorm = IntensityNorm()
) -> tuple[torch.Tensor, Letterbox]:
    """A (T, H, W) or (T, H, W, 3) stack -> ((T, 3, S, S) float32, Letterbox).

    ``frames`` may be lazy (dask, zarr, a memory map, anything indexable with ``frames[t]`` and a
    ``shape``); frames are read one at a time. Intensity scaling is per frame. Note the output
    holds T x 3 x S x S floats (12 MB per frame at S=1024).
    """
    count = frames_layout(frames)[0]
    out: torch.Tensor | None = None
    box: Letterbox | None = None
    for t in range(count):
        tensor, box = preprocess_frame(np.asarray(frames[t]), size, norm)
        if out is None:
            out = torch.empty((count, *tensor.shape), dtype=torch.float32)
        out[t] = tensor
    assert out is not None and box is not None
    return out, box
