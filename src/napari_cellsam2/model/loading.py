"""One entry point that turns a model spec (name, hub id, file or folder) into a ready model.

Specs, tried in this order:

* ``"demo"``: the small SAM 2 shipped in the package, trained here on synthetic data only
  (``scripts/pretrain_demo_model.sh``); the offline fallback of the dock and ``cellsam2 demo``.
  It is an ordinary full checkpoint folder and loads with the same code as any checkpoint.
* ``"tiny"`` / ``"hiera-tiny-random"``: random weights (tests and benchmarks only; labelled so).
* an existing file: a Meta SAM 2 / 2.1 ``.pt`` checkpoint.
* an existing folder with ``cellsam2.json``: our full checkpoint or LoRA adapter.
* an existing folder with ``config.json`` + safetensors: a transformers ``save_pretrained`` folder.
* ``owner/name``: a Hugging Face Hub id (e.g. ``facebook/sam2.1-hiera-tiny``), through the normal
  HF cache. Offline (``HF_HUB_OFFLINE=1``) or unreachable and not cached raises
  :class:`ModelNotAvailableError` with instructions; it never falls back to random weights.

Models come back on the device, in eval mode, with fp32 weights (call sites use
:func:`napari_cellsam2.model.device.autocast_context` for bf16 on CUDA).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

from .checkpoint import (
    CELLSAM2_JSON,
    TRAINED_PARAMETERS,
    TRAINED_PARAMETERS_ATTR,
    derived_from_random,
    load_trained_parameters,
    read_checkpoint_info,
)
from .device import resolve_device
from .heads import load_heads
from .meta_checkpoint import load_meta_checkpoint
from .resolution import image_size, with_image_size
from .tensor_files import SAFETENSORS_ERRORS, read_safetensors
from .tiny import build_random_model, hiera_tiny_config, tiny_config

__all__ = [
    "DEMO_NOTE",
    "DEMO_SPEC",
    "KNOWN_HUB_IDS",
    "RANDOM_SPECS",
    "LoadedModel",
    "ModelNotAvailableError",
    "ModelSpecError",
    "load_model",
]

ModelKind = Literal["hub", "meta", "checkpoint", "lora", "demo", "tiny", "hiera-tiny-random"]

RANDOM_SPECS = ("tiny", "hiera-tiny-random")
DEMO_SPEC = "demo"
DEMO_NOTE = "trained on synthetic data only"
DEMO_FOLDER = Path(__file__).parent / "weights" / "demo"
KNOWN_HUB_IDS = tuple(
    f"facebook/sam2{v}-hiera-{size}"
    for v in (".1", "")
    for size in ("tiny", "small", "base-plus", "large")
)
_HUB_FILES = ("config.json", "model.safetensors")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ModelNotAvailableError(RuntimeError):
    """The weights exist somewhere but cannot be obtained here (offline, unreachable, uncached)."""


class ModelSpecError(ValueError):
    """The spec names nothing loadable (no such file, hub repo or known name)."""


@dataclass
class LoadedModel:
    """A model ready for inference plus where it came from."""

    model: Sam2VideoModel  # a peft PeftModel wrapping one when loaded with merge_lora=False
    spec: str
    kind: ModelKind
    device: torch.device
    image_size: int
    dtype: torch.dtype = torch.float32
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_random(self) -> bool:
        """True for random-weight models and checkpoints fine-tuned from one (the flag is carried
        through ``cellsam2.json``), which must never be used to track real data."""
        return self.kind in RANDOM_SPECS or bool(self.info.get("random_weights", False))

    @property
    def description(self) -> str:
        """Short human-readable label, e.g. for a widget or a log line."""
        if self.kind == "demo":
            return f"demo ({DEMO_NOTE}; {self.image_size} px, {self.device})"
        if self.is_random:
            return f"{self.spec} (RANDOM weights, for tests/benchmarks only)"
        return f"{self.spec} ({self.kind}, {self.image_size} px, {self.device})"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_settings() -> tuple[bool, str, str]:
    """(offline, cache dir, endpoint), read at call time: huggingface_hub freezes its constants
    at import, which would ignore environment changes made afterwards (e.g. in tests)."""
    from huggingface_hub import constants

    offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or bool(constants.HF_HUB_OFFLINE)
    if os.environ.get("HF_HUB_CACHE"):
        cache = os.environ["HF_HUB_CACHE"]
    elif os.environ.get("HF_HOME"):
        cache = os.path.join(os.environ["HF_HOME"], "hub")
    else:
        cache = constants.HF_HUB_CACHE
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    return offline, cache, endpoint.rstrip("/")


def how_to_get(repo_id: str) -> str:
    return (
        f"To use {repo_id} without internet access here: on a connected machine run "
        f"`hf download {repo_id} config.json model.safetensors` (or `huggingface-cli download "
        f"{repo_id}`), then copy its Hugging Face cache (~/.cache/huggingface/hub, or wherever "
        "HF_HOME / HF_HUB_CACHE point) to this machine and set HF_HOME or HF_HUB_CACHE to it; "
        "or pass the path of a local Meta SAM 2 .pt checkpoint (e.g. sam2.1_hiera_tiny.pt) or of "
        "a folder saved with save_pretrained instead of the hub id."
    )


def _reachable(endpoint: str) -> bool:
    """One quick request: huggingface_hub retries a refused connection for ~25 s before
    falling back to the cache, which would make every offline start that slow."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=5.0)
    except Exception:  # any transport failure (refused, DNS, timeout, proxy) means unreachable
        return False
    return True


def _download_hub(repo_id: str) -> Path:
    """Return the local snapshot folder holding config.json + model.safetensors for a hub id."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline, cache, endpoint = hub_settings()
    local_only = offline or not _reachable(endpoint)
    paths = []
    for filename in _HUB_FILES:
        try:
            paths.append(
                hf_hub_download(
                    repo_id,
                    filename,
                    cache_dir=cache,
                    local_files_only=local_only,
                    endpoint=endpoint,
                )
            )
        except GatedRepoError as err:
            raise ModelNotAvailableError(
                f"{repo_id} on the Hugging Face Hub is gated: accept its terms on the website and "
                f"log in (`hf auth login`). {how_to_get(repo_id)}"
            ) from err
        except (RepositoryNotFoundError, RevisionNotFoundError) as err:
            raise ModelSpecError(
                f"no model {repo_id!r} on the Hugging Face Hub ({endpoint}; or it is private: log "
                "in with `hf auth login`) and no such local "
                f"file or folder; SAM 2 models are e.g. {', '.join(KNOWN_HUB_IDS[:4])}"
            ) from err
        except RemoteEntryNotFoundError as err:
            raise ModelSpecError(
                f"hub repo {repo_id!r} has no {filename}: it is not a transformers SAM 2 model "
                f"(try one of {', '.join(KNOWN_HUB_IDS[:4])})"
            ) from err
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as err:
            why = (
                "offline mode is on (HF_HUB_OFFLINE)"
                if offline
                else f"the Hub ({endpoint}) could not be reached"
            )
            raise ModelNotAvailableError(
                f"cannot load {repo_id}: {why} and its {filename} is not in the Hugging Face "
                f"cache at {cache}. {how_to_get(repo_id)}"
            ) from err
    return Path(paths[0]).parent


def _from_pretrained_folder(folder: Path) -> Sam2VideoModel:
    """Load a save_pretrained folder strictly (missing or unexpected weights are errors)."""
    try:
        model, report = Sam2VideoModel.from_pretrained(
            folder, dtype=torch.float32, output_loading_info=True
        )
    except (ValueError, RuntimeError, *SAFETENSORS_ERRORS) as err:  # e.g. shapes != config
        raise ModelSpecError(f"{folder} is not a loadable Sam2VideoModel folder: {err}") from err
    bad = {k: v for k, v in report.items() if v and k != "error_msgs"}
    if bad:
        raise ModelSpecError(f"{folder}: weights do not match the config: {bad}")
    # from_pretrained leaves tensors memory-mapped from the file. Copy them into ordinary memory:
    # this releases the file (Windows cannot replace a mapped checkpoint) and makes outputs
    # bit-identical to the same weights loaded any other way (mapped storage changed results
    # by ~1e-9 through different SIMD alignment).
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()
    return model


def _load_lora(
    folder: Path,
    info: dict[str, Any],
    base: str | None,
    merge: bool,
    config: Sam2VideoConfig | None,
    seen: frozenset[Path],
) -> Any:
    from peft import PeftModel, get_peft_model_state_dict

    base_spec = base or info.get("base")
    if not base_spec:
        raise ModelSpecError(
            f"LoRA adapter {folder} does not name its base model in {CELLSAM2_JSON}; "
            "pass base=... (e.g. 'facebook/sam2.1-hiera-tiny' or a .pt path)"
        )
    chain = seen | {folder.resolve()}
    if Path(str(base_spec)).expanduser().resolve() in chain:
        raise ModelSpecError(
            f"LoRA adapter {folder} has a base model cycle: its base {base_spec} is itself or "
            "an adapter built on it"
        )
    base_model = _load_cpu(str(base_spec), None, True, config, chain)[0]
    if info.get("image_size"):  # the size it was trained at (see model.resolution)
        base_model = with_image_size(base_model, int(info["image_size"]))
    misfit = f"LoRA adapter {folder} does not fit base model {base_spec!r}"
    try:
        peft_model = PeftModel.from_pretrained(base_model, str(folder), is_trainable=False)
    except (RuntimeError, ValueError, KeyError, *SAFETENSORS_ERRORS) as err:
        raise ModelSpecError(f"{misfit}: {err}") from err
    # peft only warns about adapter weights it could not place; here that is an error.
    try:
        saved = set(read_safetensors(folder / "adapter_model.safetensors"))
    except ValueError as err:
        raise ModelSpecError(str(err)) from err
    wanted = set(get_peft_model_state_dict(peft_model))
    if saved != wanted:
        raise ModelSpecError(
            f"{misfit}: missing adapter weights {sorted(wanted - saved)[:10]}, "
            f"unused adapter weights {sorted(saved - wanted)[:10]}"
        )
    try:
        trained = load_trained_parameters(peft_model, folder)
    except ValueError as err:
        raise ModelSpecError(f"{misfit}: {err}") from err
    listed = info.get("trained_parameters")
    if listed is not None and sorted(trained) != sorted(listed):  # e.g. a file lost in a copy
        raise ModelSpecError(
            f"{folder}: {CELLSAM2_JSON} lists trained parameters {sorted(listed)}, "
            f"{TRAINED_PARAMETERS} holds {sorted(trained)}"
        )
    if merge:
        return peft_model.merge_and_unload()
    # unmerged (e.g. to go on training): a save must write the bare parameters again
    setattr(peft_model, TRAINED_PARAMETERS_ATTR, tuple(trained))
    return peft_model


def _load_cpu(
    spec: str,
    base: str | None,
    merge_lora: bool,
    config: Sam2VideoConfig | None,
    seen: frozenset[Path] = frozenset(),
) -> tuple[Any, ModelKind, dict[str, Any]]:
    """Resolve ``spec`` to (model on CPU, kind, info); ``seen``: the adapters being loaded
    (a base chain that comes back to one of them is a cycle)."""
    if spec == DEMO_SPEC:
        if not (DEMO_FOLDER / CELLSAM2_JSON).is_file():
            raise ModelNotAvailableError(
                f"the demo model is missing from this installation ({DEMO_FOLDER}); reinstall "
                "napari-cellsam2 or rebuild it with scripts/pretrain_demo_model.sh"
            )
        model, _, info = _load_cpu(str(DEMO_FOLDER), base, merge_lora, config)
        return model, "demo", info
    if spec == "tiny":
        return build_random_model(tiny_config(), seed=0), "tiny", {"random": True}
    if spec == "hiera-tiny-random":
        model = build_random_model(hiera_tiny_config(), seed=0)
        return model, "hiera-tiny-random", {"random": True}
    path = Path(spec).expanduser()
    if path.is_file():
        model, meta = load_meta_checkpoint(path, config=config)
        return model, "meta", {"size": meta.size, "version": meta.version, "path": str(path)}
    if path.is_dir():
        if (path / CELLSAM2_JSON).is_file():
            info = read_checkpoint_info(path)
            if info["kind"] == "lora":
                model = _load_lora(path, info, base, merge_lora, config, seen)
            else:
                model = _from_pretrained_folder(path)
            try:
                heads = load_heads(model, path)
            except ValueError as err:
                raise ModelSpecError(str(err)) from err
            if "heads" in info and sorted(heads) != sorted(info["heads"]):  # a file lost
                raise ModelSpecError(
                    f"{path}: {CELLSAM2_JSON} lists the heads {sorted(info['heads'])}, "
                    f"heads.safetensors holds {sorted(heads)}"
                )
            return model, "lora" if info["kind"] == "lora" else "checkpoint", info
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            return _from_pretrained_folder(path), "checkpoint", {"path": str(path)}
        raise ModelSpecError(
            f"{path} is a folder but holds neither {CELLSAM2_JSON} (a napari-cellsam2 "
            "checkpoint) nor config.json + model.safetensors (a transformers model)"
        )
    if _HUB_ID.fullmatch(spec) and not spec.endswith((".pt", ".pth")):
        folder = _download_hub(spec)
        return _from_pretrained_folder(folder), "hub", {"repo_id": spec, "path": str(folder)}
    raise ModelSpecError(
        f"model {spec!r} not found: it is not an existing file or folder, not a Hugging Face "
        f"hub id (owner/name, e.g. {KNOWN_HUB_IDS[0]}) and not one of "
        f"{[DEMO_SPEC, *RANDOM_SPECS]}"
    )


def load_model(
    spec: str | Path,
    device: str | torch.device | None = "auto",
    *,
    base: str | None = None,
    merge_lora: bool = True,
    config: Sam2VideoConfig | None = None,
) -> LoadedModel:
    """Load a SAM 2 video model from ``spec`` (see the module docstring) onto ``device``.

    ``base`` overrides the base model of a LoRA adapter; ``merge_lora`` folds the adapter into
    the weights (faster inference, a plain ``Sam2VideoModel``); ``merge_lora=False`` returns
    the peft model (e.g. to continue training). ``config`` is only for Meta ``.pt`` files of
    non-official architectures, whose config cannot be recognised from the tensors.
    """
    target = resolve_device(device)
    spec_str = str(spec)
    model, kind, info = _load_cpu(spec_str, base, merge_lora, config)
    if base is not None and kind == "lora":  # the base it runs on now decides the label too
        random = bool(info.get("random_weights")) or derived_from_random(base)
        info = {**info, "random_weights": random}
    model = model.float().to(target).eval()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return LoadedModel(
        model=model,
        spec=spec_str,
        kind=kind,
        device=target,
        image_size=image_size(inner.config),
        dtype=torch.float32,
        info=info,
    )
