"""The one typed training configuration, shared by the CLI, the Python API and the napari dock.

Section and option names mirror the CellSAM2 seed (``train_ctc.py``): ``launcher.*``,
``scratch.*``, ``dataset.*``, ``model.*``, so its Hydra-style overrides work unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

DEFAULT_LORA_TARGETS = ["attn.qkv", "attn.proj", "q_proj", "k_proj", "v_proj", "o_proj"]
# Trained fully beside the LoRA adapters, as in CellSAM2: the small heads whose outputs tracking
# reads directly (which multimask output is kept, whether the object is present) and the learned
# "no memory" / "no object" tokens. Module names go through peft ``modules_to_save``; names of
# bare parameters of the model are trained and saved beside the adapter by this package.
DEFAULT_LORA_MODULES_TO_SAVE = [
    "iou_prediction_head",
    "pred_obj_score_head",
    "no_memory_embedding",
    "no_memory_positional_encoding",
    "no_object_pointer",
    "occlusion_spatial_embedding_parameter",
]


@dataclass
class LauncherConfig:
    experiment_log_dir: str = MISSING
    resume: bool = False


@dataclass
class ScratchConfig:
    num_epochs: int = 5
    num_frames: int = 4  # 1 = segmentation mode
    max_num_objects: int = 30
    batch_size: int = 1
    resolution: int = 512
    use_lora: bool = True
    lora_lr: float = 1e-3
    base_lr: float = 5e-6
    vision_lr: float = 3e-6
    freeze_encoder: bool = False
    max_num_bkgd_objects: int = 8
    use_wandb: bool = False
    dataset_name: str = "moma"
    lora_rank: int = 32  # rank / alpha / dropout: the seed's sam2.1_ctc_finetune.yaml
    lora_alpha: int = 8
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    lora_modules_to_save: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_MODULES_TO_SAVE)
    )
    supervise_all_iou: bool = True  # L1 on the predicted IoU of every multimask output
    seed: int = 0
    weight_decay: float = 0.1
    grad_clip: float = 0.1
    min_lr_ratio: float = 0.1  # cosine schedule ends at lr * min_lr_ratio
    layer_decay: float = 0.9  # layer-wise lr decay of the image encoder (full fine-tune)
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    steps_per_epoch: int | None = None  # cap (None = every clip once per epoch)
    val_steps: int | None = None  # cap on validation batches (evenly spaced clips; None = all)
    # validation on the tracking path: the real session on held-out GT movies, CTC-scored
    val_tracking_sequences: int | None = 2  # movies per validation (evenly spaced; 0 = off)
    val_tracking_frames: int | None = 30  # first frames of each movie (None = all)
    augment: bool = True
    prob_point: float = 0.5  # first prompt on a conditioning frame: click / box / mask
    prob_box: float = 0.25
    prob_mask: float = 0.25
    # Corrections as SAM 2's trainer (names and seed defaults from sam2.1_ctc_finetune.yaml):
    num_correction_pt_per_frame: int = 5  # iterative correction clicks on each corrected frame
    num_frames_to_correct: int = 2  # per clip, incl. the first prompt frame; others tracked frames
    rand_frames_to_correct: bool = True  # 1..num_frames_to_correct frames, drawn per clip
    add_all_frames_to_correct_as_cond: bool = True  # a corrected frame becomes a conditioning one
    prob_correction_from_gt: float = 0.1  # a correction click sampled from GT instead of errors
    mask_prompt_epochs: int = 0  # curriculum: the first N epochs use GT mask prompts only
    num_workers: int = 0
    log_every: int = 1


@dataclass
class DatasetConfig:
    data_dir: str = "../data/${scratch.dataset_name}"
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class ModelConfig:
    base: str = "facebook/sam2.1-hiera-tiny"
    device: str = "auto"


@dataclass
class TrainConfig:
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


class ConfigError(ValueError):
    """A bad override or config file; the message lists the valid keys."""


def valid_keys() -> list[str]:
    """Every dotted key the config accepts, e.g. ``scratch.num_frames``."""
    base = OmegaConf.structured(TrainConfig)
    return [f"{section}.{key}" for section in base for key in base[section]]


def _fail(problem: str) -> ConfigError:
    return ConfigError(f"{problem}\nvalid keys:\n  " + "\n  ".join(valid_keys()))


def _literal(value: Any) -> Any:
    """Escape OmegaConf interpolation in a string (a folder may be named ``a${b}``); the
    backslashes just before ``${`` are doubled so that they stay what they were."""
    if not isinstance(value, str):
        return value
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)


def _keep_literal(cfg: DictConfig) -> None:
    """After ``OmegaConf.resolve`` every ``${`` left is literal text, but OmegaConf would read
    it as an interpolation on the next access: escape it again."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for section, values in raw.items():
        for name, value in values.items():
            if isinstance(value, str) and "${" in value:
                cfg[section][name] = _literal(value)


def load_config(
    overrides: Sequence[str] = (),
    yaml_file: str | Path | None = None,
    *,
    values: Mapping[str, Any] | None = None,
    require_log_dir: bool = True,
) -> DictConfig:
    """Defaults ← YAML file ← ``key=value`` overrides ← ``values`` (dotted key → Python value,
    never parsed as text: paths with spaces, ``#`` or ``:`` stay as they are), type-checked against
    :class:`TrainConfig`."""
    cfg = OmegaConf.structured(TrainConfig)
    try:
        if yaml_file is not None:
            path = Path(yaml_file)
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise _fail(f"override {item!r} is not of the form key=value")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
        for key, value in (values or {}).items():
            if key not in valid_keys():
                raise _fail(f"unknown config key {key!r}")
            OmegaConf.update(cfg, key, _literal(value), merge=False)
        if require_log_dir and OmegaConf.is_missing(cfg.launcher, "experiment_log_dir"):
            raise _fail("launcher.experiment_log_dir is required")
        OmegaConf.resolve(cfg)
        _keep_literal(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        first = str(exc).splitlines()[0]
        raise _fail(f"bad config value{f' for {key}' if key else ''}: {first}") from exc
    return cfg


def to_dataclass(cfg: DictConfig) -> TrainConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
