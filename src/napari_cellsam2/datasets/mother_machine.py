"""Synthetic mother-machine time-lapses (MOMA-like rod-shaped bacteria in a narrow channel).

The channel is vertical with its closed end at the top and its open end at
the bottom of the frame. Cells are capsules stacked from the closed end;
every cell grows exponentially, so the growth of all cells above pushes a
cell towards the open end, where it eventually leaves the frame and its
track ends. A cell divides at a noisy length threshold into two daughters
that take new track IDs (the mother's track ends on the frame before).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_cellsam2.datasets.imaging import camera, edge_coverage, illumination_field
from napari_cellsam2.datasets.sequence import SyntheticSequence

# Continuous gap between the tips of neighbouring cells. Any interval longer
# than one pixel contains a pixel centre, so neighbours never touch in labels.
CELL_GAP = 1.5


@dataclass
class _Rod:
    """One cell of the simulation; ``label`` 0 until it is accepted into the stack."""

    label: int
    length: float
    rate: float
    division_length: float
    brightness: float
    x_offset: float
    top: float = 0.0
    born: int = 0
    retired: bool = False


@dataclass(frozen=True)
class _Channel:
    height: int
    width: int
    radius: float
    centre_x: float
    closed_end: float

    def distance(self, rod: _Rod) -> tuple[slice, np.ndarray]:
        """Rows the rod may touch and the distance of their pixel centres to the rod's axis."""
        start = max(0, int(np.floor(rod.top)) - 2)
        stop = min(self.height, int(np.ceil(rod.top + rod.length)) + 3)
        rows = slice(start, max(start, stop))
        y = np.arange(rows.start, rows.stop, dtype=float)[:, None]
        x = np.arange(self.width, dtype=float)[None, :]
        axis_top = rod.top + self.radius
        axis_bottom = rod.top + rod.length - self.radius
        dy = y - np.clip(y, axis_top, axis_bottom)
        return rows, np.hypot(dy, x - (self.centre_x + rod.x_offset))

    def visible_area(self, rod: _Rod) -> int:
        """Number of labelled pixels the rod has inside the frame."""
        _, dist = self.distance(rod)
        return int(np.count_nonzero(dist <= self.radius))

    def stack(self, rods: list[_Rod]) -> None:
        """Place rods end to end from the closed end of the channel downwards."""
        top = self.closed_end
        for rod in rods:
            rod.top = top
            top += rod.length + CELL_GAP


def _validate(frames: int, height: int, width: int, min_area: int) -> None:
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if width < 8:
        raise ValueError(f"width must be >= 8 pixels for a channel to fit, got {width}")
    if height < 2 * width:
        raise ValueError(
            f"height must be >= 2 * width (a tall, narrow channel), got {height}x{width}"
        )
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")


def mother_machine(
    frames: int = 60,
    height: int = 256,
    width: int = 32,
    seed: int = 0,
    *,
    channel_width: float | None = None,
    cell_width_fraction: float = 0.65,
    doubling_frames: float = 18.0,
    division_length: float | None = None,
    brightness: float = 450.0,
    min_area: int = 15,
) -> SyntheticSequence:
    """Render a mother-machine time-lapse with tracking/segmentation ground truth.

    ``channel_width`` defaults to 75 % of ``width``; cells are
    ``cell_width_fraction`` of the channel wide and divide at about
    ``division_length`` pixels (default 4 cell widths, as for E. coli).
    ``doubling_frames`` is the mean doubling time in frames. Objects with
    fewer than ``min_area`` visible pixels are never labelled: a cell whose
    visible part at the open end drops below it ends its track for good.
    The result is a pure function of the arguments.
    """
    _validate(frames, height, width, min_area)
    channel_width = 0.75 * width if channel_width is None else float(channel_width)
    if not 4.0 <= channel_width <= width:
        raise ValueError(f"channel_width must be in [4, width={width}], got {channel_width}")
    if not 0.2 <= cell_width_fraction <= 0.95:
        raise ValueError(f"cell_width_fraction must be in [0.2, 0.95], got {cell_width_fraction}")
    if doubling_frames <= 0:
        raise ValueError(f"doubling_frames must be > 0, got {doubling_frames}")
    cell_width = cell_width_fraction * channel_width
    division_length = 4.0 * cell_width if division_length is None else float(division_length)
    if division_length < 2.5 * cell_width:
        raise ValueError(
            f"division_length must be >= 2.5 cell widths ({2.5 * cell_width:.1f} px) so that "
            f"daughters are rods, got {division_length}"
        )
    closed_end = max(3.0, round(0.03 * height))
    if closed_end + division_length > height:
        raise ValueError(f"height {height} is too small for cells of length {division_length:.0f}")

    rng = np.random.default_rng(seed)
    channel = _Channel(height, width, cell_width / 2.0, (width - 1) / 2.0, closed_end)
    growth = np.log(2.0) / doubling_frames

    def new_rod(length: float, lineage_brightness: float, born: int) -> _Rod:
        return _Rod(
            label=0,
            length=length,
            rate=growth * float(np.clip(1.0 + 0.12 * rng.standard_normal(), 0.6, 1.4)),
            division_length=division_length
            * float(np.clip(1 + 0.07 * rng.standard_normal(), 0.8, 1.2)),
            brightness=lineage_brightness
            * float(np.clip(1 + 0.06 * rng.standard_normal(), 0.8, 1.2)),
            x_offset=float(rng.uniform(-0.6, 0.6)),
            born=born,
        )

    next_label = 1
    parents: dict[int, int] = {}
    rods: list[_Rod] = []
    top = closed_end
    while True:
        lineage_brightness = brightness * float(np.clip(1 + 0.15 * rng.standard_normal(), 0.6, 1.4))
        rod = new_rod(float(rng.uniform(0.5, 0.95)) * division_length, lineage_brightness, 0)
        rod.top = top
        if channel.visible_area(rod) < min_area:
            break
        rod.label, next_label = next_label, next_label + 1
        rods.append(rod)
        top += rod.length + CELL_GAP

    scene = _channel_scene(height, width, channel_width, closed_end)
    illumination = illumination_field((height, width), rng, gradient=0.2, vignetting=0.35)
    images = np.zeros((frames, height, width), dtype=np.uint16)
    labels = np.zeros((frames, height, width), dtype=np.uint16)
    for t in range(frames):
        if t > 0:
            for rod in rods:
                rod.length *= float(np.exp(rod.rate))
            channel.stack(rods)
            next_rods: list[_Rod] = []
            for rod in rods:
                daughters = _divide(rod, rng, new_rod, t) if _wants_division(rod) else []
                if daughters and all(channel.visible_area(d) >= min_area for d in daughters):
                    for daughter in daughters:
                        daughter.label, next_label = next_label, next_label + 1
                        parents[daughter.label] = rod.label
                    next_rods.extend(daughters)
                else:
                    next_rods.append(rod)
            rods = [rod for rod in next_rods if rod.top < height + 2]
        if next_label > np.iinfo(np.uint16).max:
            raise ValueError("too many tracks for uint16 labels; use fewer frames")
        signal = scene.copy()
        for rod in rods:
            _paint(rod, channel, labels[t], signal, t, min_area)
        bleach = np.exp(-0.004 * t) * (1.0 + 0.02 * rng.standard_normal())
        images[t] = camera(
            signal * illumination * bleach,
            rng,
            blur_sigma=1.0,
            gain=1.0,
            offset=100.0,
            read_noise=3.0,
        )
    return SyntheticSequence(images=images, labels=labels, seg=labels.copy(), parents=parents)


def _wants_division(rod: _Rod) -> bool:
    return not rod.retired and rod.length >= rod.division_length


def _divide(
    rod: _Rod, rng: np.random.Generator, new_rod: Callable[[float, float, int], _Rod], frame: int
) -> list[_Rod]:
    """Split ``rod`` into two daughters that together fill the mother's extent."""
    usable = rod.length - CELL_GAP
    fraction = float(np.clip(0.5 + 0.03 * rng.standard_normal(), 0.42, 0.58))
    first = new_rod(usable * fraction, rod.brightness, frame)
    second = new_rod(usable - first.length, rod.brightness, frame)
    first.top = rod.top
    second.top = rod.top + first.length + CELL_GAP
    return [first, second]


def _paint(
    rod: _Rod, channel: _Channel, labels: np.ndarray, signal: np.ndarray, frame: int, min_area: int
) -> None:
    """Label the rod (or retire it when too little is left in view) and add its fluorescence."""
    rows, dist = channel.distance(rod)
    inside = dist <= channel.radius
    if not rod.retired:
        if np.count_nonzero(inside) < min_area:
            if rod.born == frame:
                raise RuntimeError(
                    f"cell {rod.label} would be born below min_area on frame {frame}"
                )
            rod.retired = True
        else:
            window = labels[rows]
            if np.any(window[inside]):
                raise RuntimeError(f"cell {rod.label} overlaps another cell on frame {frame}")
            window[inside] = rod.label
    # Thicker in the middle than at the rim, as for a cylinder seen from above.
    thickness = np.sqrt(np.clip(1.0 - (dist / channel.radius) ** 2, 0.0, 1.0))
    signal[rows] += (
        rod.brightness * edge_coverage(dist - channel.radius) * (0.55 + 0.45 * thickness)
    )


def _channel_scene(height: int, width: int, channel_width: float, closed_end: float) -> np.ndarray:
    """Noise-free background: dim chip material, brighter medium in the channel, faint walls."""
    y = np.arange(height, dtype=float)[:, None]
    x = np.arange(width, dtype=float)[None, :]
    half = channel_width / 2.0
    centre = (width - 1) / 2.0
    outside_x = np.abs(x - centre) - half
    outside_y = (closed_end - 1.0) - y
    signed = np.maximum(outside_x, outside_y)
    medium = edge_coverage(signed)
    walls = np.exp(-(signed**2) / (2 * 0.9**2))
    return 12.0 + 18.0 * medium + 30.0 * walls
