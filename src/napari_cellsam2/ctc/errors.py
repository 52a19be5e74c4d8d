"""The one error type of the CTC layer: it always names the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class CTCFormatError(ValueError):
    """A CTC file or folder breaks the format; ``path`` points at the culprit."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
