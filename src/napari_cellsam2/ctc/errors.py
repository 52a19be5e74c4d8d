"""The error and warning types of the CTC layer: they always name the offending path."""

from __future__ import annotations

from pathlib import Path


class CTCFormatError(ValueError):
    """A CTC file or folder breaks the format; ``path`` points at the culprit."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class OutputExistsError(CTCFormatError):
    """An output folder already holds an earlier output and the caller did not choose to
    replace it: user-made results and ground truth are never replaced silently, so front ends
    catch this to ask (dock) or to name their overwrite option (CLI)."""


class CTCWarning(UserWarning):
    """Data that opens but is suspect (a lineage naming a label no mask has, mismatched frame
    shapes): napari shows it as a notification, the CLI prints it."""
