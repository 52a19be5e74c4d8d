"""The project's own checkpoint folders: full fine-tunes and LoRA adapters.

A folder holds the weights in transformers/peft's own safetensors layout plus ``cellsam2.json``,
which says what kind of checkpoint it is and which base model a LoRA adapter belongs to, so
:func:`napari_cellsam2.model.loading.load_model` can open either from the folder path alone.
Folders are written to a temporary sibling and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from torch import nn

from ..ctc.writer import atomic_folder, read_json_record
from .heads import HEADS_FILE, head_prefixes, head_state, without_heads
from .resolution import image_size

__all__ = [
    "CELLSAM2_JSON",
    "FORMAT_VERSION",
    "TRAINED_PARAMETERS",
    "derived_from_random",
    "load_trained_parameters",
    "read_checkpoint_info",
    "save_adapter_checkpoint",
    "save_model_checkpoint",
]

CELLSAM2_JSON = "cellsam2.json"
FORMAT_VERSION = 1
# Bare parameters trained beside a LoRA adapter (peft saves only modules): no-memory / no-object
# embeddings and pointer. See training.params.apply_lora.
TRAINED_PARAMETERS = "trained_parameters.safetensors"
# the attribute of a peft model naming the bare parameters trained beside its adapter
TRAINED_PARAMETERS_ATTR = "cellsam2_trained_parameters"
RANDOM_BASES = ("tiny", "hiera-tiny-random")


def derived_from_random(base_spec: str | Path | None) -> bool:
    """Whether ``base_spec`` is a random-weight model or a checkpoint derived from one, so that
    the "random weights" label survives fine-tuning (a LoRA adapter on random weights is no more
    a cell tracker than the random model)."""
    if base_spec is None:
        return False
    if str(base_spec) in RANDOM_BASES:
        return True
    folder = Path(base_spec).expanduser()
    if (folder / CELLSAM2_JSON).is_file():
        try:
            return bool(read_checkpoint_info(folder).get("random_weights", False))
        except ValueError:
            return False
    return False


def _package_version() -> str:
    from napari_cellsam2 import __version__

    return __version__


def _normalise_base_spec(base_spec: str | Path | None) -> str | None:
    """Store local base paths absolutely so the checkpoint still loads from another directory."""
    if base_spec is None:
        return None
    if str(base_spec) in (*RANDOM_BASES, "demo"):  # names the loader resolves before paths
        return str(base_spec)
    path = Path(base_spec).expanduser()
    return str(path.resolve()) if path.exists() else str(base_spec)


def _info(
    kind: Literal["full", "lora"],
    base_spec: str | Path | None,
    image_size: int,
    extra_meta: dict[str, Any] | None,
) -> dict[str, Any]:
    info = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "base": _normalise_base_spec(base_spec),
        "image_size": int(image_size),
        "random_weights": derived_from_random(base_spec),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "napari_cellsam2_version": _package_version(),
        "meta": dict(extra_meta or {}),
    }
    try:
        json.dumps(info)
    except TypeError as err:
        raise TypeError(f"extra_meta must be JSON-serialisable: {err}") from err
    return info


def _atomic_folder(folder: str | Path):
    """The CTC writer's atomic folder; it replaces only an earlier checkpoint (a folder that
    holds ``cellsam2.json``), never an unrelated folder."""
    final = Path(folder).expanduser().resolve()
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"checkpoint destination {final} exists and is not a folder")
    earlier = (final / CELLSAM2_JSON).is_file()
    return atomic_folder(final, lambda _entry: earlier)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_heads(folder: Path, heads: dict[str, Any]) -> None:
    """CellSAM2's heads (if any) beside the weights: :data:`.heads.HEADS_FILE`."""
    if heads:
        from safetensors.torch import save_file

        save_file(heads, str(folder / HEADS_FILE))


def save_model_checkpoint(
    model: nn.Module,
    folder: str | Path,
    extra_meta: dict[str, Any] | None = None,
    base_spec: str | Path | None = None,
) -> Path:
    """Write a full ``Sam2VideoModel``: ``model.safetensors``, ``config.json``, ``cellsam2.json``.

    ``base_spec`` records what the model was fine-tuned from (informational); ``extra_meta``
    (JSON-serialisable) goes under ``"meta"`` in ``cellsam2.json``. Returns the folder path.
    A peft model must be merged first (``merge_and_unload()``) or saved as an adapter.
    """
    if hasattr(model, "peft_config"):
        raise TypeError(
            "save_model_checkpoint got a peft model; use save_adapter_checkpoint for LoRA "
            "adapters, or merge_and_unload() it first to save full weights"
        )
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise TypeError(f"expected a transformers Sam2VideoModel, got {type(model).__name__}")
    info = _info("full", base_spec, image_size(model.config), extra_meta)
    heads = head_state(model)
    info["heads"] = head_prefixes(heads)
    with _atomic_folder(folder) as tmp:
        # transformers loads model.safetensors strictly: the heads go in their own file
        model.save_pretrained(
            tmp, safe_serialization=True, state_dict=without_heads(model.state_dict())
        )
        _write_heads(tmp, heads)
        _write_json(tmp / CELLSAM2_JSON, info)
    return Path(folder).expanduser().resolve()


def save_adapter_checkpoint(
    peft_model: nn.Module,
    folder: str | Path,
    base_spec: str | Path,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write a peft LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``) and
    ``cellsam2.json`` naming the base model spec it must be applied to. Returns the folder path.
    """
    save: Callable[..., Any] | None = getattr(peft_model, "save_pretrained", None)
    if not hasattr(peft_model, "peft_config") or save is None:
        raise TypeError(
            f"save_adapter_checkpoint needs a peft model, got {type(peft_model).__name__}; "
            "use save_model_checkpoint for full weights"
        )
    if not str(base_spec):
        raise ValueError("base_spec must name the base model the adapter was trained on")
    base = peft_model.get_base_model()
    info = _info("lora", base_spec, image_size(base.config), extra_meta)
    names = tuple(getattr(peft_model, TRAINED_PARAMETERS_ATTR, ()))
    info["trained_parameters"] = list(names)
    heads = head_state(peft_model)
    info["heads"] = head_prefixes(heads)
    with _atomic_folder(folder) as tmp:
        save(str(tmp), safe_serialization=True)
        if names:
            from safetensors.torch import save_file

            tensors = {n: getattr(base, n).detach().float().cpu().contiguous() for n in names}
            save_file(tensors, str(tmp / TRAINED_PARAMETERS))
        _write_heads(tmp, heads)
        _write_json(tmp / CELLSAM2_JSON, info)
    return Path(folder).expanduser().resolve()


def load_trained_parameters(model: nn.Module, folder: str | Path) -> list[str]:
    """Copy the bare parameters saved beside a LoRA adapter into ``model`` (a Sam2VideoModel or
    a peft model around one); returns their names. Shapes must match: a mismatch raises."""
    import torch

    from .tensor_files import read_safetensors

    path = Path(folder) / TRAINED_PARAMETERS
    if not path.is_file():
        return []
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tensors = read_safetensors(path)
    with torch.no_grad():
        for name, value in tensors.items():
            target = getattr(base, name, None)
            if not isinstance(target, torch.nn.Parameter) or target.shape != value.shape:
                shape = None if target is None else tuple(target.shape)
                raise ValueError(
                    f"{path}: parameter {name!r} {tuple(value.shape)} does not fit the model "
                    f"({shape})"
                )
            target.copy_(value.to(target))
    return sorted(tensors)


def read_checkpoint_info(folder: str | Path) -> dict[str, Any]:
    """Read and validate ``cellsam2.json`` of a checkpoint folder."""
    path = Path(folder) / CELLSAM2_JSON
    info = read_json_record(path)
    if info.get("kind") not in ("full", "lora"):
        raise ValueError(f"{path}: 'kind' must be 'full' or 'lora', got {info.get('kind')!r}")
    size = info.get("image_size")
    if size is not None and (type(size) is not int or size < 64 or size % 32):
        raise ValueError(f"{path}: 'image_size' must be a multiple of 32, >= 64; got {size!r}")
    version = info.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}; this napari-cellsam2 reads up to "
            f"{FORMAT_VERSION} (upgrade napari-cellsam2)"
        )
    return info
