"""Which SAM 2 parameters train, and with which learning rate and weight decay.

Two modes, chosen by ``scratch.use_lora``:

* **LoRA** - peft adapters on the modules named by ``scratch.lora_targets`` (by default the
  image-encoder block attentions, the mask-decoder transformer and the memory-attention
  self/cross attentions); every other base weight is frozen, except what
  ``scratch.lora_modules_to_save`` names: modules (the IoU and object-score heads) are trained as
  full copies through peft ``modules_to_save``, bare parameters (the no-memory / no-object
  embeddings and pointer) are unfrozen in place (see :func:`train_extra_parameters`). All of them
  train at ``lora_lr``. Without the heads, LoRA cannot retrain the outputs tracking reads to pick
  a mask and to decide that a cell is present.
* **Full** - every parameter trains. The image encoder (``vision_encoder.*``) uses ``vision_lr``
  with layer-wise decay (block ``i`` of ``n`` gets ``vision_lr * layer_decay ** (n - 1 - i)``, the
  patch and positional embeddings one step below block 0, the FPN neck the full ``vision_lr``),
  everything else ``base_lr``. ``freeze_encoder`` freezes the whole image encoder instead.

In both modes ``head_lr``, when set, gives CellSAM2's heads (division, heatmap) their own rate,
so that fresh heads and the trained SAM 2 under them can move at different speeds. Measured in
docs/results/divisions.md: one shared 3e-4 let tracking drift (run D, validation TRA 0.772 ->
0.682); SAM 2 at 1e-4 with the heads at 1e-3 kept tracking but its division head did not learn
the event (run E2).

In both modes only the weight matrices of linear and convolution layers get weight decay; biases,
norms, learned tokens/embeddings and positional encodings do not (decaying them towards zero
only distorts them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..model.checkpoint import TRAINED_PARAMETERS_ATTR
from ..model.heads import PREFIXES
from .config import ScratchConfig

__all__ = [
    "ParamCount",
    "apply_lora",
    "build_param_groups",
    "count_parameters",
    "freeze_encoder",
    "split_modules_to_save",
    "train_extra_parameters",
]

_BLOCK = re.compile(r"(?:^|\.)vision_encoder\.backbone\.blocks\.(\d+)\.")
_ENCODER = re.compile(r"(?:^|\.)vision_encoder\.")
_ENCODER_STEM = re.compile(r"(?:^|\.)vision_encoder\.backbone\.(?:patch_embed|pos_embed)")


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} ({100 * self.fraction:.2f}%)"


def count_parameters(model: nn.Module) -> ParamCount:
    """Trainable and total parameter counts (LoRA adapters included in both)."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParamCount(trainable, total)


def split_modules_to_save(model: nn.Module, names: list[str]) -> tuple[list[str], list[str]]:
    """Split ``scratch.lora_modules_to_save`` into module suffixes (for peft) and the names of
    bare ``nn.Parameter`` attributes of the model (which peft cannot wrap).

    A parameter that the model does not have (e.g. ``occlusion_spatial_embedding_parameter`` of
    a configuration without it) is skipped; a name that is neither raises.
    """
    modules = {n for n, _ in model.named_modules()}
    params = dict(model.named_parameters(recurse=False))
    module_names, param_names = [], []
    for name in names:
        if name in params:
            param_names.append(name)
        elif any(m == name or m.endswith("." + name) for m in modules):
            module_names.append(name)
        elif not hasattr(model, name):  # a known optional parameter may be None on this config
            raise ValueError(
                f"scratch.lora_modules_to_save names {name!r}, which is neither a module nor a "
                "parameter of the model"
            )
    return module_names, param_names


def apply_lora(model: nn.Module, scratch: ScratchConfig) -> nn.Module:
    """Wrap ``model`` in a peft ``PeftModel`` with LoRA adapters; base weights frozen except
    ``scratch.lora_modules_to_save`` (trained in full).

    The adapters are injected into ``model`` itself (``peft_model.base_model.model is model``),
    so code that calls the Sam2VideoModel's submodules keeps working on the original object.
    """
    from peft import LoraConfig, get_peft_model

    targets = list(scratch.lora_targets)
    if not targets:
        raise ValueError("scratch.lora_targets is empty; name at least one module suffix")
    module_names, param_names = split_modules_to_save(model, list(scratch.lora_modules_to_save))
    lora = LoraConfig(
        r=scratch.lora_rank,
        lora_alpha=scratch.lora_alpha,
        lora_dropout=scratch.lora_dropout,
        target_modules=targets,
        modules_to_save=module_names or None,
        bias="none",
    )
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as err:
        raise ValueError(
            f"scratch.lora_targets={targets} matches no module of the model: {err}"
        ) from err
    return train_extra_parameters(peft_model, param_names)


def train_extra_parameters(peft_model: nn.Module, names: list[str]) -> nn.Module:
    """Unfreeze the bare parameters ``names`` of a peft model's base model and remember them
    (checkpoints save them beside the adapter)."""
    base = peft_model.get_base_model()
    for name in names:
        getattr(base, name).requires_grad_(True)
    setattr(peft_model, TRAINED_PARAMETERS_ATTR, tuple(names))
    return peft_model


def freeze_encoder(model: nn.Module) -> int:
    """Freeze every image-encoder parameter; returns how many tensors were frozen."""
    frozen = 0
    for name, p in model.named_parameters():
        if _ENCODER.search(name):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def _decayed_names(model: nn.Module) -> set[str]:
    """Names of the weight matrices of linear/convolution layers (the only ones decayed)."""
    decayed: set[str] = set()
    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    for mod_name, module in model.named_modules():
        if isinstance(module, kinds) and getattr(module, "weight", None) is not None:
            decayed.add(f"{mod_name}.weight" if mod_name else "weight")
    return decayed


def _encoder_blocks(names: list[str]) -> int:
    ids = [int(m.group(1)) for n in names if (m := _BLOCK.search(n))]
    return max(ids) + 1 if ids else 0


def _lr_scale(name: str, num_blocks: int, layer_decay: float) -> tuple[str, float]:
    """Group label and lr multiplier of an image-encoder parameter under layer-wise decay."""
    if m := _BLOCK.search(name):
        block = int(m.group(1))
        return f"encoder.block{block}", layer_decay ** (num_blocks - 1 - block)
    if _ENCODER_STEM.search(name):
        return "encoder.stem", layer_decay**num_blocks
    return "encoder.neck", 1.0


def _is_head(name: str) -> bool:
    """Whether ``name`` is a parameter of CellSAM2's heads (also under peft's name prefix)."""
    return any(name.startswith(p) or f".{p}" in name for p in PREFIXES)


def build_param_groups(model: nn.Module, scratch: ScratchConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups (``params``, ``lr``, ``weight_decay``, ``name``) of the trainable
    parameters, following the mode described in the module docstring."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("no trainable parameters (is everything frozen?)")
    decayed = _decayed_names(model)
    num_blocks = _encoder_blocks([n for n, _ in named])
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in named:
        if scratch.head_lr is not None and _is_head(name):
            label, lr = "heads", scratch.head_lr
        elif scratch.use_lora:
            label, lr = "lora", scratch.lora_lr
        elif _ENCODER.search(name):
            label, scale = _lr_scale(name, num_blocks, scratch.layer_decay)
            lr = scratch.vision_lr * scale
        else:
            label, lr = "base", scratch.base_lr
        decay = name in decayed
        group = groups.setdefault(
            (label, decay),
            {
                "params": [],
                "lr": lr,
                "weight_decay": scratch.weight_decay if decay else 0.0,
                "name": f"{label}{'' if decay else '.no_decay'}",
            },
        )
        group["params"].append(p)
    return list(groups.values())
