"""Qt widgets of the CellSAM2 dock (the only Qt code of the package)."""

from .dock import CellSAM2Widget

__all__ = ["CellSAM2Widget"]
