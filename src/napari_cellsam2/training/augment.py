"""Clip augmentations for fine-tuning: one set of random parameters per clip, every frame alike.

SAM 2 learns to follow objects through time, so a clip must stay a plausible video: every frame of
a clip gets the same flip, affine and intensity parameters (only the Gaussian noise field is drawn
anew per frame, as a camera's noise would be).

Where they act. Geometric transforms act on the original frame grid *before* letterboxing, so the
letterbox padding stays padding (the model never sees rotated padding); images are resampled
bilinearly, labels with nearest neighbour (label ids survive), and pixels that come from outside
the frame get the frame's median intensity in the image and background (0) in the labels.
Intensity transforms act on the image after intensity normalisation to [0, 1]
(:class:`~napari_cellsam2.model.preprocess.IntensityNorm`), before letterboxing, and the result
is clipped to [0, 1], so the augmented image is in the same range the model sees at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

__all__ = [
    "AugmentConfig",
    "GeometricParams",
    "IntensityParams",
    "apply_geometric",
    "apply_intensity",
    "sample_geometric",
    "sample_intensity",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the clip augmentations (defaults are mild, microscopy-safe)."""

    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_affine: float = 0.5
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_translate: float = 0.05  # fraction of the frame width / height
    p_intensity: float = 0.8  # gain, offset and gamma jitter
    gain_range: tuple[float, float] = (0.8, 1.2)
    offset_range: tuple[float, float] = (-0.1, 0.1)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    p_blur: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.3, 1.2)  # pixels of the original frame
    p_noise: float = 0.3
    noise_std_range: tuple[float, float] = (0.0, 0.05)  # on the [0, 1] image


@dataclass(frozen=True)
class GeometricParams:
    """Flips, then an affine about the frame centre (degrees, scale, translation as fractions)."""

    hflip: bool = False
    vflip: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0
    translate: tuple[float, float] = (0.0, 0.0)  # (x, y) fractions of (width, height)

    @property
    def has_affine(self) -> bool:
        return self.angle_deg != 0.0 or self.scale != 1.0 or self.translate != (0.0, 0.0)


@dataclass(frozen=True)
class IntensityParams:
    """``clip(gain * x ** gamma + offset)``, then Gaussian blur and Gaussian noise (0 = none)."""

    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_geometric(rng: np.random.Generator, cfg: AugmentConfig) -> GeometricParams:
    hflip = bool(rng.random() < cfg.p_hflip)
    vflip = bool(rng.random() < cfg.p_vflip)
    if rng.random() >= cfg.p_affine:
        return GeometricParams(hflip, vflip)
    angle = _uniform(rng, (-cfg.max_rotation_deg, cfg.max_rotation_deg))
    scale = _uniform(rng, cfg.scale_range)
    tx, ty = (_uniform(rng, (-cfg.max_translate, cfg.max_translate)) for _ in range(2))
    return GeometricParams(hflip, vflip, angle, scale, (tx, ty))


def sample_intensity(rng: np.random.Generator, cfg: AugmentConfig) -> IntensityParams:
    gain, offset, gamma = 1.0, 0.0, 1.0
    if rng.random() < cfg.p_intensity:
        gain = _uniform(rng, cfg.gain_range)
        offset = _uniform(rng, cfg.offset_range)
        gamma = _uniform(rng, cfg.gamma_range)
    blur = _uniform(rng, cfg.blur_sigma_range) if rng.random() < cfg.p_blur else 0.0
    noise = _uniform(rng, cfg.noise_std_range) if rng.random() < cfg.p_noise else 0.0
    return IntensityParams(gain, offset, gamma, blur, noise)


def _affine_theta(params: GeometricParams, height: int, width: int) -> torch.Tensor:
    """``affine_grid`` matrix (output -> input, normalised coords) for a pixel-space affine.

    Built in centred pixel units so a rotation stays a rotation on non-square frames:
    with ``D = diag(W/2, H/2)`` (align_corners=False), theta = D⁻¹ A⁻¹ D and the translation
    term is -D⁻¹ A⁻¹ t.
    """
    a = math.radians(params.angle_deg)
    forward = params.scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    inverse = np.linalg.inv(forward)
    d = np.diag([width / 2.0, height / 2.0])
    d_inv = np.diag([2.0 / width, 2.0 / height])
    shift = np.array([params.translate[0] * width, params.translate[1] * height])
    theta = np.concatenate([d_inv @ inverse @ d, (-d_inv @ inverse @ shift)[:, None]], axis=1)
    return torch.as_tensor(theta, dtype=torch.float64)


def apply_geometric(
    images: np.ndarray, labels: np.ndarray, params: GeometricParams
) -> tuple[np.ndarray, np.ndarray]:
    """Transform a clip: ``images`` (T, H, W, C) float32, ``labels`` (T, H, W) integer.

    Returns arrays of the same shapes and dtypes; identity parameters return the inputs unchanged.
    """
    if images.shape[:3] != labels.shape:
        raise ValueError(
            f"images {images.shape} and labels {labels.shape} must share (T, H, W) for augmentation"
        )
    if params.hflip:
        images, labels = images[:, :, ::-1], labels[:, :, ::-1]
    if params.vflip:
        images, labels = images[:, ::-1], labels[:, ::-1]
    if not params.has_affine:
        return np.ascontiguousarray(images), np.ascontiguousarray(labels)
    t, h, w = labels.shape
    theta = _affine_theta(params, h, w)[None].expand(t, -1, -1)
    grid = F.affine_grid(theta, [t, 1, h, w], align_corners=False)
    fill = np.median(images, axis=(1, 2), keepdims=True).astype(np.float32)  # (T, 1, 1, C)
    img = torch.from_numpy(np.ascontiguousarray((images - fill).transpose(0, 3, 1, 2)))
    warped = F.grid_sample(
        img.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    out_images = warped.numpy().transpose(0, 2, 3, 1) + fill
    # float64 holds every uint32 label exactly
    lab = torch.from_numpy(np.ascontiguousarray(labels).astype(np.float64))[:, None]
    warped_lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out_labels = np.rint(warped_lab[:, 0].numpy()).astype(labels.dtype)
    return np.ascontiguousarray(out_images, dtype=np.float32), out_labels


def apply_intensity(
    images: np.ndarray, params: IntensityParams, rng: np.random.Generator
) -> np.ndarray:
    """Jitter a (T, H, W, C) clip in [0, 1]; returns float32 clipped to [0, 1]."""
    out = images.astype(np.float32, copy=True)
    np.clip(out, 0.0, 1.0, out=out)  # resampling can undershoot 0; a power of it would be NaN
    if params.gamma != 1.0:
        out = np.power(out, params.gamma, dtype=np.float32)
    if params.gain != 1.0 or params.offset != 0.0:
        out = out * np.float32(params.gain) + np.float32(params.offset)
    np.clip(out, 0.0, 1.0, out=out)
    if params.blur_sigma > 0:
        out = gaussian_filter(out, sigma=(0, params.blur_sigma, params.blur_sigma, 0))
    if params.noise_std > 0:
        out = out + rng.normal(0.0, params.noise_std, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
