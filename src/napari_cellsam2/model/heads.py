"""CellSAM2's two heads beside SAM 2: the division head and the cell-centre heatmap head.

**Division head**: a learned token in SAM 2's mask decoder and an MLP on its output.
The token joins the decoder's prompt tokens (:func:`.hf_sam2.install_extra_token`), so the
two-way transformer attends it to the image and the memory-conditioned features like SAM 2's own
output tokens; its output goes through a 3-layer MLP into one *division logit* per decoded object.
At a division, the decoder's multimask outputs 1 and 2 are the daughters' masks (output 0 stays
the mask of a cell that does not divide): :mod:`napari_cellsam2.tracking.divisions`.

**Heatmap head** (:class:`CentreHeatmapHead`, ``centre_head``): a few convolutions over the
image encoder's three feature levels, resized to a quarter of the model resolution, predict a
cell-centre heatmap; its local maxima become the point prompts that find cells without clicks
(:mod:`napari_cellsam2.tracking.detect`). It reads the image features only, so it never changes
what SAM 2 computes.

Both are our modules beside transformers' ``Sam2VideoModel`` and are saved in their own file,
``heads.safetensors``, next to any checkpoint (full or LoRA), so transformers' strict loading of
``model.safetensors`` never sees them. A model without heads runs no hook and computes exactly
what it did before.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .hf_sam2 import install_extra_token

__all__ = [
    "HEADS_FILE",
    "HEAD_PREFIX",
    "CentreHeatmapHead",
    "DivisionHead",
    "attach_centre_head",
    "attach_division_head",
    "centre_head",
    "copy_heads",
    "division_head",
    "head_state",
    "heads_of",
    "load_heads",
    "without_heads",
]

HEADS_FILE = "heads.safetensors"
HEAD_PREFIX = "mask_decoder.division_head."
CENTRE_PREFIX = "centre_head."
PREFIXES = (HEAD_PREFIX, CENTRE_PREFIX)
# A fresh head says "no division" (sigmoid(-4) = 0.018) until trained, so plain SAM 2 weights
# with a new head track as before instead of splitting cells at random.
INITIAL_BIAS = -4.0


class DivisionHead(nn.Module):
    """The division token (``token``, like SAM 2's ``iou_token``) and its MLP (``score``).

    The MLP reads the token's output and what the decoder's masks cover at the finest feature
    level: the mean features under each of the three multimask outputs (their sigmoids, without
    gradient into the masks) and their relative areas and overlaps. The token alone attends to
    the decoder's coarsest embedding, 1/16 of the model resolution: at the demo model's 128 px a
    trench is 2 embedding cells wide, and a token-only head learned nothing in 768 steps
    (division probability 0.02-0.05 on every frame, divisions included; docs/results/divisions.md).
    """

    STATS = 5  # areas of outputs 0-2 (fractions of output 0's), overlap of 1 and 2, 1+2 inside 0

    def __init__(self, hidden: int, fine_channels: int) -> None:
        super().__init__()
        self.token = nn.Embedding(1, hidden)
        width = hidden + 3 * fine_channels + self.STATS
        self.score = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        nn.init.constant_(self.score[-1].bias, INITIAL_BIAS)

    def forward(self, token: torch.Tensor, masks: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """Division logits (n,) from the token output (n, C), the decoder's mask logits
        (n, K, H, W) (K = 1 is repeated) and the finest features (n, C_f, H, W)."""
        prob = torch.sigmoid(masks.detach().float())
        if prob.shape[1] == 1:
            prob = prob.expand(-1, 3, -1, -1)
        area = prob.flatten(2).sum(-1)  # (n, 3)
        pooled = torch.einsum("nkhw,nchw->nkc", prob, fine.float()) / area.clamp(min=1)[..., None]
        whole = area[:, :1].clamp(min=1)
        overlap = (prob[:, 1] * prob[:, 2]).flatten(1).sum(-1, keepdim=True)
        inside = ((prob[:, 1] + prob[:, 2]).clamp(max=1) * prob[:, 0]).flatten(1).sum(-1, True)
        stats = torch.cat([area / whole, overlap / whole, inside / whole], dim=1)
        features = torch.cat([token.float(), pooled.flatten(1), stats], dim=1)
        return self.score(features.to(self.score[0].weight.dtype))[:, 0]


class CentreHeatmapHead(nn.Module):
    """Cell-centre heatmap logits at a quarter of the model resolution from the image encoder's
    feature levels (finest first, as ``get_image_features(...).fpn_hidden_states``)."""

    def __init__(self, channels: list[int], hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(sum(channels), hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 1),
        )
        # CenterNet's prior: a peak is rare, so logits start at sigmoid^-1(0.01)
        nn.init.constant_(self.net[-1].bias, -4.6)

    def forward(self, features: list[torch.Tensor], sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Levels (HW_l, B, C_l) with their (h_l, w_l) -> logits (B, h_0, w_0)."""
        target = tuple(sizes[0])
        maps = []
        for feature, size in zip(features, sizes, strict=True):
            level = feature.permute(1, 2, 0).reshape(feature.shape[1], feature.shape[2], *size)
            if tuple(size) != target:
                level = torch.nn.functional.interpolate(
                    level.float(), size=target, mode="bilinear", align_corners=False
                ).to(level.dtype)
            maps.append(level)
        return self.net(torch.cat(maps, dim=1))[:, 0]


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
        # the finest image features enter the decoder beside its upscaled embedding
        head = DivisionHead(reference.shape[-1], decoder.upscale_conv2.out_channels)
    head = head.to(device=reference.device, dtype=reference.dtype)
    head.requires_grad_(reference.requires_grad)
    decoder.division_head = head
    install_extra_token(decoder)
    return head


def centre_head(model: nn.Module) -> CentreHeatmapHead | None:
    """The model's cell-centre heatmap head, or None."""
    head = getattr(_base(model), "centre_head", None)
    return head if isinstance(head, CentreHeatmapHead) else None


def attach_centre_head(model: nn.Module, seed: int = 0) -> CentreHeatmapHead:
    """Give ``model`` a heatmap head (freshly initialised from ``seed``) unless it has one."""
    head = centre_head(model)
    if head is not None:
        return head
    base = _base(model)
    decoder = base.mask_decoder
    reference = base.no_memory_embedding
    # the feature levels' widths: SAM 2 narrows the two finest with the decoder's conv_s0/s1
    channels = [
        decoder.conv_s0.out_channels,
        decoder.conv_s1.out_channels,
        decoder.iou_token.weight.shape[-1],
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = CentreHeatmapHead(channels)
    head = head.to(device=reference.device, dtype=reference.dtype)
    head.requires_grad_(reference.requires_grad)
    base.centre_head = head
    return head


# every head: its prefix in the model's names, how to find it, how to give a model a fresh one
_KINDS = (
    (HEAD_PREFIX, division_head, attach_division_head),
    (CENTRE_PREFIX, centre_head, attach_centre_head),
)


def _heads(model: nn.Module) -> dict[str, nn.Module]:
    found = {prefix: get(model) for prefix, get, _ in _KINDS}
    return {prefix: head for prefix, head in found.items() if head is not None}


def heads_of(model: nn.Module) -> list[nn.Module]:
    """The heads the model has (trained in full beside LoRA adapters, like SAM 2's small
    heads)."""
    return list(_heads(model).values())


def copy_heads(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` the heads of ``source``, with their weights (e.g. a resized copy)."""
    for _, get, attach in _KINDS:
        head = get(source)
        if head is not None:
            attach(target).load_state_dict(head.state_dict())


def head_prefixes(state: dict[str, torch.Tensor]) -> list[str]:
    """The heads a :func:`head_state` holds (their prefixes), as ``cellsam2.json`` lists them."""
    return sorted({p for key in state for p in PREFIXES if key.startswith(p)})


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The heads' tensors by their names in the model (empty for plain SAM 2)."""
    return {
        prefix + name: value.detach().float().cpu().contiguous()
        for prefix, head in _heads(model).items()
        for name, value in head.state_dict().items()
    }


def without_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state dict minus the heads (what transformers' ``save_pretrained`` may write)."""
    return {k: v for k, v in state.items() if not k.startswith(PREFIXES)}


def load_heads(model: nn.Module, folder: str | Path) -> list[str]:
    """Attach and fill the heads saved in ``folder/heads.safetensors``; returns the prefixes of
    the heads loaded (none when the file is absent). A tensor that is missing, unexpected or of
    the wrong shape is a ValueError that names the file."""
    from .tensor_files import read_safetensors

    path = Path(folder) / HEADS_FILE
    if not path.is_file():
        return []
    tensors = read_safetensors(path)
    unknown = sorted(k for k in tensors if not k.startswith(PREFIXES))
    if unknown:
        raise ValueError(f"{path}: unexpected tensors {unknown[:5]}")
    loaded = []
    for prefix, _, attach in _KINDS:
        saved = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not saved:
            continue
        try:  # strict: a missing, unexpected or misshapen tensor is an error
            attach(model).load_state_dict(saved, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: the {prefix[:-1]} does not fit the model: {err}") from err
        loaded.append(prefix)
    return loaded
