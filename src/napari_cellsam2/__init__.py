"""napari-cellsam2: SAM 2 cell tracking, correction, fine-tuning and CTC export in napari."""

__version__ = "0.1.0"
