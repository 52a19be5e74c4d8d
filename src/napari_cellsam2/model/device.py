"""Choosing the torch device and the matching autocast context."""

from __future__ import annotations

import contextlib
import threading

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["PRECISIONS", "autocast_context", "resolve_device", "training_kernels"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a usable device.

    ``auto`` prefers CUDA, then Apple MPS, then the CPU. An explicit device that is not available
    raises instead of silently running somewhere slower.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name.strip().lower() if isinstance(name, str) else name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device {name!r} is not a valid torch device; use 'auto', 'cpu', 'cuda', 'cuda:N' "
            "or 'mps'"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} requested but CUDA is not available (torch "
                f"{torch.__version__}, built with CUDA {torch.version.cuda}); use 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RuntimeError(f"device {name!r} requested but only {count} CUDA device(s) exist")
    elif device.type == "mps" and not _mps_available():
        raise RuntimeError(f"device {name!r} requested but Apple MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'")
    return device


PRECISIONS = ("auto", "fp32", "bf16")


def autocast_context(
    device: torch.device | str, precision: str = "auto"
) -> contextlib.AbstractContextManager:
    """The numeric precision SAM 2 runs in on ``device``.

    ``auto``: bf16 autocast on CUDA (what SAM 2 is usually run in there), fp32 on CPU and MPS,
    where bf16 is slow or unsupported. ``fp32``: full fp32 everywhere, on CUDA with TF32 off
    too (TF32 convolutions alone changed a third of a near-random model's mask pixels against
    the CPU, see docs/results/gpu.md). ``bf16``: bf16 autocast, CUDA only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if device.type != "cuda":
        if precision == "bf16":
            raise ValueError(f"bf16 precision needs a CUDA device, not {device}; use 'fp32'")
        return contextlib.nullcontext()
    if precision == "fp32":
        return _no_tf32()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


_TF32_LOCK = threading.Lock()
_tf32_blocks = 0  # strict-fp32 blocks running now, in any thread
_tf32_before: tuple[bool, bool] = (False, False)  # the flags before the first of them


@contextlib.contextmanager
def _no_tf32():
    """Strict fp32 matmuls and convolutions on CUDA for the block.

    The flags are global and the tracker runs such blocks in two threads at once (a frame
    encode beside a tracking step), so the blocks share one switch: TF32 is off while any of
    them runs, and the flags from before the first come back when the last one ends. Saving
    and restoring per block let one block's end switch TF32 back on under the other, and left
    it off for good when they ended in the other order."""
    global _tf32_blocks, _tf32_before
    with _TF32_LOCK:
        if _tf32_blocks == 0:
            _tf32_before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        _tf32_blocks += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_blocks -= 1
            if _tf32_blocks == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = (
                    _tf32_before
                )


# Every scaled-dot-product-attention backend but cuDNN's (the flags are global for the block).
_SDPA_WITHOUT_CUDNN = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


@contextlib.contextmanager
def training_kernels(device: torch.device | str, precision: str = "auto"):
    """The precision of :func:`autocast_context`, with cuDNN's attention kernels left out.

    cuDNN builds an execution plan for every new attention shape, and a training clip's shapes
    change from step to step (its object count does). On an H200 (hiera-tiny, 512 px, 8 frames,
    up to 20 objects, bf16) that planning made a step take 5.5 s of wall time for 0.6 s of GPU
    kernels; without cuDNN's kernels the step took 2.3 s, the kernels the same 0.6 s
    (docs/results/gpu.md). Flash and memory-efficient attention need no plan. On the CPU the
    excluded backend is never chosen, so nothing changes there.
    """
    with autocast_context(device, precision), sdpa_kernel(_SDPA_WITHOUT_CUDNN):
        yield
