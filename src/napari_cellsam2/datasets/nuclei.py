"""Synthetic 2D nuclei time-lapses: a second imaging domain next to the mother machine.

Elliptic, textured nuclei perform a persistent random walk in an open field.
Moves that would bring two nuclei closer than a one-pixel gap are rejected,
so labels never overlap. A nucleus divides after a noisy cell-cycle length
into two daughters placed on either side of it (new track IDs); when there
is no room the division waits. Nuclei may drift out of the frame: once less
than ``min_area`` pixels are visible the track ends for good.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cellsam2.datasets.imaging import camera, edge_coverage, illumination_field, smooth_noise
from napari_cellsam2.datasets.sequence import SyntheticSequence

# Minimum continuous gap between the bounding circles of two nuclei.
NUCLEUS_GAP = 1.5
# Smallest semi-axis a nucleus can have, so that no object is a speck.
MIN_SEMI_AXIS = 3.0
TEXTURE_SIZE = 64
PERSISTENCE = 0.8


@dataclass
class _Nucleus:
    label: int
    y: float
    x: float
    semi_major: float
    semi_minor: float
    target_major: float
    angle: float
    vy: float
    vx: float
    age: int
    cycle: int
    brightness: float
    texture: np.ndarray
    born: int = 0

    @property
    def reach(self) -> float:
        """Radius of the bounding circle used for collision tests."""
        return self.semi_major


class _Crowd:
    """Centres and collision radii of all nuclei as arrays, for vectorised gap checks."""

    def __init__(self, nuclei: list[_Nucleus]) -> None:
        self.y = np.array([c.y for c in nuclei], dtype=float)
        self.x = np.array([c.x for c in nuclei], dtype=float)
        self.reach = np.array([c.reach for c in nuclei], dtype=float)

    def clear(self, y: float, x: float, reach: float, skip: int = -1) -> bool:
        """Whether a circle at (y, x) keeps the gap to every nucleus but number ``skip``."""
        gap = np.hypot(self.y - y, self.x - x) - self.reach - reach
        if skip >= 0:
            gap[skip] = np.inf
        return bool(np.all(gap >= NUCLEUS_GAP))

    def update(self, index: int, cell: _Nucleus) -> None:
        self.y[index], self.x[index], self.reach[index] = cell.y, cell.x, cell.reach


def nuclei_field(
    frames: int = 30,
    height: int = 128,
    width: int = 128,
    n_cells: int = 8,
    seed: int = 0,
    *,
    radius: float = 7.0,
    speed: float = 1.0,
    cycle_frames: float = 20.0,
    brightness: float = 220.0,
    min_area: int = 15,
) -> SyntheticSequence:
    """Render a field of moving, dividing nuclei with tracking/segmentation ground truth.

    ``radius`` is the mean nucleus radius in pixels, ``speed`` the random-walk
    step size in pixels per frame and ``cycle_frames`` the mean time between
    divisions (initial cell-cycle phases are random, so divisions occur from
    the start). The result is a pure function of the arguments.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    if not 4.0 <= radius <= min(height, width) / 4:
        raise ValueError(f"radius must be in [4, min(height, width)/4], got {radius}")
    if speed < 0 or cycle_frames < 2:
        raise ValueError(f"need speed >= 0 and cycle_frames >= 2, got {speed}, {cycle_frames}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")

    rng = np.random.default_rng(seed)
    shape = (height, width)
    next_label = 1

    def make(y: float, x: float, major: float, minor: float, lineage_brightness: float, born: int):
        nonlocal next_label
        label, next_label = next_label, next_label + 1
        if label > np.iinfo(np.uint16).max:
            raise ValueError("too many tracks for uint16 labels; use fewer frames or cells")
        target = radius * float(np.clip(1 + 0.15 * rng.standard_normal(), 0.7, 1.3))
        cycle = max(
            4, round(cycle_frames * float(np.clip(1 + 0.2 * rng.standard_normal(), 0.5, 1.5)))
        )
        return _Nucleus(
            label=label,
            y=y,
            x=x,
            semi_major=major,
            semi_minor=minor,
            target_major=target,
            angle=float(rng.uniform(0, np.pi)),
            vy=float(rng.normal(0, speed)),
            vx=float(rng.normal(0, speed)),
            age=0,
            cycle=cycle,
            brightness=lineage_brightness
            * float(np.clip(1 + 0.1 * rng.standard_normal(), 0.7, 1.3)),
            texture=smooth_noise((TEXTURE_SIZE, TEXTURE_SIZE), rng, sigma=1.5),
            born=born,
        )

    nuclei: list[_Nucleus] = []
    for _ in range(200 * n_cells):
        if len(nuclei) == n_cells:
            break
        major = radius * float(np.clip(1 + 0.15 * rng.standard_normal(), 0.7, 1.3))
        y, x = rng.uniform(major + 1, height - major - 1), rng.uniform(major + 1, width - major - 1)
        if _Crowd(nuclei).clear(y, x, major):
            aspect = float(rng.uniform(1.0, 1.4))
            lineage = brightness * float(np.exp(0.3 * rng.standard_normal()))
            cell = make(float(y), float(x), major, major / aspect, lineage, 0)
            cell.target_major = major
            cell.age = int(rng.integers(0, cell.cycle))
            nuclei.append(cell)
    if len(nuclei) < n_cells:
        raise ValueError(f"cannot place {n_cells} nuclei of radius {radius} in {height}x{width}")

    background = 40.0 * (1.0 + 0.25 * smooth_noise(shape, rng, sigma=12.0))
    illumination = illumination_field(shape, rng, gradient=0.15, vignetting=0.25)
    images = np.zeros((frames, height, width), dtype=np.uint16)
    labels = np.zeros((frames, height, width), dtype=np.uint16)
    parents: dict[int, int] = {}
    for t in range(frames):
        if t > 0:
            crowd = _Crowd(nuclei)
            for index in rng.permutation(len(nuclei)):
                _move(int(index), nuclei[index], crowd, rng, speed)
            dividing = [cell for cell in nuclei if cell.age >= cell.cycle]
            for mother in dividing:
                crowd = _Crowd(nuclei)
                placed = _daughter_positions(mother, nuclei.index(mother), crowd, rng, shape)
                if placed is None:
                    continue  # no room yet: the division waits
                nuclei.remove(mother)
                for y, x, major, minor in placed:
                    daughter = make(y, x, major, minor, mother.brightness, t)
                    parents[daughter.label] = mother.label
                    nuclei.append(daughter)
        signal = background.copy()
        for cell in list(nuclei):
            if not _paint(cell, labels[t], signal, t, min_area):
                nuclei.remove(cell)
        images[t] = camera(
            signal * illumination, rng, blur_sigma=1.5, gain=3.0, offset=300.0, read_noise=6.0
        )
    return SyntheticSequence(images=images, labels=labels, seg=labels.copy(), parents=parents)


def _move(
    index: int, cell: _Nucleus, crowd: _Crowd, rng: np.random.Generator, speed: float
) -> None:
    """Persistent random-walk step, growth and rotation, each rejected if it would collide."""
    cell.age += 1
    cell.angle += float(rng.normal(0, 0.05))
    grown = cell.semi_major + 0.2 * (cell.target_major - cell.semi_major)
    if crowd.clear(cell.y, cell.x, grown, skip=index):
        cell.semi_minor *= grown / cell.semi_major
        cell.semi_major = grown
        crowd.update(index, cell)
    cell.vy = PERSISTENCE * cell.vy + (1 - PERSISTENCE) * float(rng.normal(0, 2 * speed))
    cell.vx = PERSISTENCE * cell.vx + (1 - PERSISTENCE) * float(rng.normal(0, 2 * speed))
    for step in (1.0, 0.5):
        y, x = cell.y + step * cell.vy, cell.x + step * cell.vx
        if crowd.clear(y, x, cell.reach, skip=index):
            cell.y, cell.x = y, x
            crowd.update(index, cell)
            return
    cell.vy, cell.vx = -0.5 * cell.vy, -0.5 * cell.vx  # bounced off a neighbour


def _daughter_positions(
    mother: _Nucleus,
    index: int,
    crowd: _Crowd,
    rng: np.random.Generator,
    shape: tuple[int, int],
) -> list[tuple[float, float, float, float]] | None:
    """Centres and semi-axes of two daughters either side of the mother, or None if no room.

    Daughters share the mother's area and must lie fully inside the frame so
    that both tracks start with a full object.
    """
    major = max(MIN_SEMI_AXIS, mother.semi_major / np.sqrt(2))
    minor = max(MIN_SEMI_AXIS, mother.semi_minor / np.sqrt(2))
    offset = major + NUCLEUS_GAP / 2 + 0.25
    start = float(rng.uniform(0, np.pi))
    for turn in np.linspace(0, np.pi, 8, endpoint=False):
        dy, dx = offset * np.sin(start + turn), offset * np.cos(start + turn)
        centres = [(mother.y + dy, mother.x + dx), (mother.y - dy, mother.x - dx)]
        inside = all(
            major + 1 <= y <= shape[0] - major - 2 and major + 1 <= x <= shape[1] - major - 2
            for y, x in centres
        )
        if inside and all(crowd.clear(y, x, major, skip=index) for y, x in centres):
            return [(y, x, major, minor) for y, x in centres]
    return None


def _paint(
    cell: _Nucleus, labels: np.ndarray, signal: np.ndarray, frame: int, min_area: int
) -> bool:
    """Label and render one nucleus; False (and nothing labelled) when too little is in view."""
    height, width = labels.shape
    reach = int(np.ceil(cell.semi_major)) + 2
    rows = _window(cell.y, reach, height)
    cols = _window(cell.x, reach, width)
    dy = np.arange(rows.start, rows.stop, dtype=float)[:, None] - cell.y
    dx = np.arange(cols.start, cols.stop, dtype=float)[None, :] - cell.x
    along = dy * np.sin(cell.angle) + dx * np.cos(cell.angle)
    across = -dy * np.cos(cell.angle) + dx * np.sin(cell.angle)
    rho = np.hypot(along / cell.semi_major, across / cell.semi_minor)
    inside = rho <= 1.0
    if np.count_nonzero(inside) < min_area:
        if cell.born == frame:
            raise RuntimeError(
                f"nucleus {cell.label} would be born below min_area on frame {frame}"
            )
        return False
    window = labels[rows, cols]
    if np.any(window[inside]):
        raise RuntimeError(f"nucleus {cell.label} overlaps another nucleus on frame {frame}")
    window[inside] = cell.label
    # Texture is fixed in the nucleus frame of reference, so it moves with the nucleus.
    centre = TEXTURE_SIZE // 2
    ty = np.clip(np.rint(centre + along).astype(int), 0, TEXTURE_SIZE - 1)
    tx = np.clip(np.rint(centre + across).astype(int), 0, TEXTURE_SIZE - 1)
    condensed = 1.6 if cell.age >= cell.cycle - 1 else 1.0  # chromatin condenses before mitosis
    chromatin = np.clip(1.0 + 0.3 * condensed * cell.texture[ty, tx], 0.2, None)
    rim = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))
    coverage = edge_coverage((rho - 1.0) * cell.semi_minor)
    signal[rows, cols] += cell.brightness * condensed * coverage * chromatin * rim
    return True


def _window(centre: float, reach: int, size: int) -> slice:
    """Pixel range within ``reach`` of ``centre``, clipped to [0, size) (possibly empty)."""
    start = min(size, max(0, int(np.floor(centre)) - reach))
    stop = max(start, min(size, int(np.floor(centre)) + reach + 1))
    return slice(start, stop)
