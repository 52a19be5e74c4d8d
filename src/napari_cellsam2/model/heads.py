"""CellSAM2's division head: a learned token in SAM 2's mask decoder and an MLP on its output.

The token joins the decoder's prompt tokens (:func:`.hf_sam2.install_extra_token`), so the
two-way transformer attends it to the image and the memory-conditioned features like SAM 2's own
output tokens; its output goes through a 3-layer MLP into one *division logit* per decoded object.
At a division, the decoder's multimask outputs 1 and 2 are the daughters' masks (output 0 stays
the mask of a cell that does not divide): :mod:`napari_cellsam2.tracking.divisions`.

The head is our module beside transformers' ``Sam2VideoModel``: it hangs on the mask decoder
(``mask_decoder.division_head``) and is saved in its own file, ``heads.safetensors``, next to
any checkpoint (full or LoRA), so transformers' strict loading of ``model.safetensors`` never
sees it. A model without the head runs no hook and computes exactly what it did before.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .hf_sam2 import install_extra_token

__all__ = [
    "HEADS_FILE",
    "HEAD_PREFIX",
    "DivisionHead",
    "attach_division_head",
    "division_head",
    "head_state",
    "load_heads",
    "without_heads",
]

HEADS_FILE = "heads.safetensors"
HEAD_PREFIX = "mask_decoder.division_head."
# A fresh head says "no division" (sigmoid(-4) = 0.018) until trained, so plain SAM 2 weights
# with a new head track as before instead of splitting cells at random.
INITIAL_BIAS = -4.0


class DivisionHead(nn.Module):
    """The division token (``token``, like SAM 2's ``iou_token``) and its MLP (``score``)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.token = nn.Embedding(1, hidden)
        self.score = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.constant_(self.score[-1].bias, INITIAL_BIAS)


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def division_head(model: nn.Module) -> DivisionHead | None:
    """The model's division head, or None (plain SAM 2)."""
    head = getattr(_base(model).mask_decoder, "division_head", None)
    return head if isinstance(head, DivisionHead) else None


def attach_division_head(model: nn.Module, seed: int = 0) -> DivisionHead:
    """Give ``model`` a division head (freshly initialised from ``seed``) unless it has one;
    returns the head. It is created on the model's device and dtype."""
    head = division_head(model)
    if head is not None:
        return head
    decoder = _base(model).mask_decoder
    reference = decoder.iou_token.weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = DivisionHead(reference.shape[-1])
    head = head.to(device=reference.device, dtype=reference.dtype)
    head.requires_grad_(reference.requires_grad)
    decoder.division_head = head
    install_extra_token(decoder)
    return head


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The heads' tensors by their names in the model (empty for plain SAM 2)."""
    head = division_head(model)
    if head is None:
        return {}
    return {
        HEAD_PREFIX + name: value.detach().float().cpu().contiguous()
        for name, value in head.state_dict().items()
    }


def without_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict minus the heads (what transformers' ``save_pretrained`` may write)."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}


def load_heads(model: nn.Module, folder: str | Path) -> list[str]:
    """Attach and fill the heads saved in ``folder/heads.safetensors``; returns the head names
    loaded (none when the file is absent). A tensor that is missing, unexpected or of the wrong
    shape is a ValueError that names the file."""
    from safetensors.torch import load_file

    path = Path(folder) / HEADS_FILE
    if not path.is_file():
        return []
    tensors = load_file(str(path))
    head = attach_division_head(model)
    wanted = {HEAD_PREFIX + name: v for name, v in head.state_dict().items()}
    if set(tensors) != set(wanted):
        raise ValueError(f"{path}: expected tensors {sorted(wanted)}, found {sorted(tensors)}")
    for name, value in tensors.items():
        if value.shape != wanted[name].shape:
            raise ValueError(
                f"{path}: {name} has shape {tuple(value.shape)}, the model needs "
                f"{tuple(wanted[name].shape)}"
            )
    head.load_state_dict(
        {name[len(HEAD_PREFIX) :]: value for name, value in tensors.items()}, strict=True
    )
    return ["division"]
