"""The small fixed sequence napari offers as sample data."""

from __future__ import annotations

from napari_cellsam2.datasets.mother_machine import mother_machine
from napari_cellsam2.datasets.sequence import SyntheticSequence

SAMPLE_FRAMES = 40
SAMPLE_SHAPE = (256, 32)
SAMPLE_SEED = 0


def sample_sequence() -> SyntheticSequence:
    """A 40-frame 256x32 mother-machine sequence with a few divisions and exits.

    Fixed parameters so that the sample (and tutorials built on it) never change.
    """
    height, width = SAMPLE_SHAPE
    return mother_machine(frames=SAMPLE_FRAMES, height=height, width=width, seed=SAMPLE_SEED)
