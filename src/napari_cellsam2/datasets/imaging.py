"""Microscope and camera effects shared by the synthetic generators.

Both domains render a noise-free photon-rate image and pass it through the
same optics/camera model with different parameters, so that the two domains
differ in statistics (gain, offset, read noise, blur, illumination) the way
two real microscopes do.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

UINT16_MAX = np.iinfo(np.uint16).max


def edge_coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Approximate pixel coverage (0..1) from a signed distance to an edge (negative inside).

    Gives anti-aliased object borders so that sub-pixel motion is visible.
    """
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    std = field.std()
    return (field - field.mean()) / std if std > 0 else field - field.mean()


def illumination_field(
    shape: tuple[int, int], rng: np.random.Generator, gradient: float, vignetting: float
) -> np.ndarray:
    """Multiplicative, smooth uneven illumination (1.0 = nominal).

    A linear gradient in a random direction plus radial fall-off from a
    slightly off-centre optical axis, as seen in widefield microscopes.
    """
    height, width = shape
    yy, xx = np.meshgrid(
        np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij"
    )
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.cos(angle) * yy + np.sin(angle) * xx
    cy, cx = rng.uniform(-0.3, 0.3, size=2)
    radial = ((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0
    return np.clip(1.0 + gradient * ramp - vignetting * radial, 0.05, None)


def camera(
    photons: np.ndarray,
    rng: np.random.Generator,
    *,
    blur_sigma: float,
    gain: float,
    offset: float,
    read_noise: float,
) -> np.ndarray:
    """Blur, shot noise, read noise and digitisation of a photon-rate image to uint16.

    ``photons`` is the expected signal in camera counts; shot noise is
    Poisson in units of ``gain`` counts per photo-electron.
    """
    blurred = ndimage.gaussian_filter(np.clip(photons, 0.0, None), blur_sigma, mode="nearest")
    electrons = rng.poisson(blurred / gain)
    counts = electrons * gain + offset + rng.normal(0.0, read_noise, size=photons.shape)
    return np.clip(np.rint(counts), 0, UINT16_MAX).astype(np.uint16)
