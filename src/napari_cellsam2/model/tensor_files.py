"""Reading the safetensors files of a checkpoint: one clear error for a damaged one.

Checkpoints are untrusted input. ``safetensors`` reports a truncated or foreign file as its own
``SafetensorError`` without the path, which reached the user as a traceback; here it becomes a
``ValueError`` that names the file, the error every checkpoint loader already reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["SAFETENSORS_ERRORS", "read_safetensors"]


def _errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (SafetensorError, OSError)


SAFETENSORS_ERRORS = _errors()  # what reading a damaged safetensors file raises


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the file at ``path`` (on the CPU)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SAFETENSORS_ERRORS as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
