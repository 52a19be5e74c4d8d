"""The one typed training configuration, shared by the CLI, the Python API and the napari dock.

Section and option names mirror the CellSAM2 seed (``train_ctc.py``): ``launcher.*``,
``scratch.*``, ``dataset.*``, ``model.*``, so its Hydra-style overrides work unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
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


def _opt(default: Any, title: str, help: str) -> Any:
    """A config field with the title and help the dock's form and the CLI show (one source of
    truth for the option's name, default and meaning)."""
    meta = {"title": title, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


MODEL_DEFAULT_DIVISIONS = "default"
"""``val_divisions`` value that tracks validation movies with the model's own division mode (the
session's default: learned with a division head, off without), named once here for the option,
its check and the trainer."""


@dataclass
class ScratchConfig:
    num_epochs: int = _opt(5, "Epochs", "passes over the training clips")
    num_frames: int = _opt(4, "Frames per clip", "consecutive frames per clip; 1 = segmentation")
    max_num_objects: int = _opt(30, "Max objects", "cells tracked per clip (a random subset)")
    batch_size: int = _opt(1, "Batch size", "clips per optimizer step")
    resolution: int = _opt(512, "Resolution", "model input size in pixels (multiple of 32)")
    use_lora: bool = _opt(True, "LoRA", "train LoRA adapters (else every weight: full)")
    lora_lr: float = _opt(1e-3, "LoRA lr", "learning rate of the adapters and trained heads")
    base_lr: float = _opt(5e-6, "Base lr", "full mode: decoder, memory and heads")
    vision_lr: float = _opt(3e-6, "Vision lr", "full mode: image encoder (layer-wise decay)")
    freeze_encoder: bool = _opt(False, "Freeze encoder", "full mode: keep the image encoder")
    max_num_bkgd_objects: int = _opt(
        8, "Background objects", "fake objects clicked in empty space (learn 'no object')"
    )
    use_wandb: bool = _opt(False, "Weights & Biases", "also log to wandb")
    dataset_name: str = _opt("moma", "Dataset name", "names the default dataset.data_dir")
    # rank / dropout: the seed's sam2.1_ctc_finetune.yaml. Alpha is not (the seed's is 8): at
    # scale 8 / 32 LoRA barely adapted the demo model to a held-out style in 400 steps (test TRA
    # 0.31 +- 0.23, clicks per track down in 1 seed of 3); at 32 / 32 it did in every seed
    # (0.80 +- 0.03), docs/results/README.md "LoRA's scale"
    lora_rank: int = _opt(32, "LoRA rank", "rank of the adapters")
    lora_alpha: int = _opt(32, "LoRA alpha", "adapter scale is alpha / rank")
    lora_dropout: float = _opt(0.1, "LoRA dropout", "dropout on the adapters' input")
    lora_targets: list[str] = _opt(  # noqa: RUF009 - _opt returns a field with a factory
        DEFAULT_LORA_TARGETS, "LoRA targets", "module name suffixes that get adapters"
    )
    lora_modules_to_save: list[str] = _opt(  # noqa: RUF009
        DEFAULT_LORA_MODULES_TO_SAVE,
        "Trained beside LoRA",
        "modules and parameters trained in full in LoRA mode (the small heads)",
    )
    # loss weights, named after SAM 2's weight_dict (loss_mask is the focal term)
    loss_mask: float = _opt(20.0, "Focal weight", "weight of the per-pixel focal loss")
    loss_dice: float = _opt(1.0, "Dice weight", "weight of the dice loss")
    loss_iou: float = _opt(1.0, "IoU weight", "weight of the IoU-prediction loss")
    loss_class: float = _opt(1.0, "Object-score weight", "weight of the object-score loss")
    # CellSAM2's division head (model.heads), named as in the seed
    pred_div_scores: bool = _opt(
        False,
        "Division head",
        "learn divisions: a division score and the daughters' masks (adds the head if missing)",
    )
    loss_div: float = _opt(1.0, "Division weight", "weight of the division-score loss")
    div_pos_weight: float = _opt(
        1.0,
        "Division positive weight",
        "division-score BCE weight of a dividing cell's decode (1: the seed's plain BCE)",
    )
    div_clip_fraction: float = _opt(
        0.5,
        "Division clips",
        "with a division head: at least this fraction of training clips hold a division",
    )
    mother_covers_daughters: bool = _opt(
        False,
        "Mother covers daughters",
        "without a division head: after a division the mother's target is her daughters "
        "together, the mask the tracker's split rule divides (else it is empty)",
    )
    pred_heatmap: bool = _opt(
        False,
        "Heatmap head",
        "learn where cells are: a cell-centre heatmap for finding cells without clicks",
    )
    loss_heatmap: float = _opt(1.0, "Heatmap weight", "weight of the centre-heatmap loss")
    head_lr: float | None = _opt(
        None,
        "Heads lr",
        "learning rate of CellSAM2's heads (division, heatmap); empty = that of their mode",
    )
    heads_only: bool = _opt(
        False,
        "Train the heads only",
        "train only CellSAM2's heads (division, heatmap) at head_lr, else base_lr; SAM 2 stays",
    )
    supervise_all_iou: bool = _opt(
        True, "Supervise all IoUs", "train the predicted IoU of every multimask output"
    )
    seed: int = _opt(0, "Seed", "data order, augmentation and prompts")
    weight_decay: float = _opt(0.1, "Weight decay", "AdamW, weight matrices only")
    grad_clip: float = _opt(0.1, "Gradient clip", "max gradient norm (0 = off)")
    min_lr_ratio: float = _opt(0.1, "Final lr ratio", "the cosine schedule ends at lr x this")
    layer_decay: float = _opt(0.9, "Layer decay", "full mode: lr x this per encoder block")
    amp: bool = _opt(True, "bf16 on CUDA", "bf16 autocast on CUDA (fp32 on the CPU)")
    steps_per_epoch: int | None = _opt(
        None, "Steps per epoch", "cap on steps per epoch (empty = every clip once)"
    )
    val_steps: int | None = _opt(
        None, "Validation batches", "cap on validation batches (empty = all clips)"
    )
    validate_first: bool = _opt(
        True, "Validate the base model", "a validation before the first step (epoch 0)"
    )
    val_tracking_sequences: int | None = _opt(
        2,
        "Validation movies",
        "held-out movies tracked and CTC-scored each epoch (0 = off, empty = all)",
    )
    val_tracking_frames: int | None = _opt(
        30, "Validation frames", "first frames of each validation movie (empty = all)"
    )
    val_divisions: str = _opt(
        MODEL_DEFAULT_DIVISIONS,
        "Validation divisions",
        "how validation tracking divides: learned, learned+split, split, off, or "
        f"{MODEL_DEFAULT_DIVISIONS} (the model's own default)",
    )
    augment: bool = _opt(True, "Augment", "flips, affine and intensity changes")
    prob_point: float = _opt(0.5, "P(click)", "first prompt: one click")
    prob_box: float = _opt(0.25, "P(box)", "first prompt: a box")
    prob_mask: float = _opt(0.25, "P(mask)", "first prompt: the GT mask")
    # Corrections as SAM 2's trainer (names and seed defaults from sam2.1_ctc_finetune.yaml)
    num_correction_pt_per_frame: int = _opt(
        5, "Correction clicks", "iterative correction clicks on each corrected frame"
    )
    num_frames_to_correct: int = _opt(
        2, "Frames to correct", "per clip, the first prompt frame included"
    )
    rand_frames_to_correct: bool = _opt(
        True, "Random frames to correct", "1..'frames to correct' frames, drawn per clip"
    )
    add_all_frames_to_correct_as_cond: bool = _opt(
        True, "Corrected = conditioning", "a corrected frame becomes a conditioning frame"
    )
    prob_correction_from_gt: float = _opt(
        0.1, "P(click from GT)", "a correction click drawn from the GT instead of the errors"
    )
    mask_prompt_epochs: int = _opt(
        0, "Mask-prompt epochs", "curriculum: the first N epochs prompt with GT masks only"
    )
    memory_from_gt: bool = _opt(
        False, "Teacher-forced memory", "write the GT masks into memory (set by the curriculum)"
    )
    memory_from_gt_epochs: int = _opt(
        0, "Teacher-forced epochs", "curriculum: the first N epochs remember GT masks"
    )
    num_workers: int = _opt(0, "Data workers", "DataLoader worker processes")
    log_every: int = _opt(1, "Log every", "steps between log records")


def option_help(name: str) -> tuple[str, str]:
    """(title, help) of ``scratch.<name>``."""
    for f in fields(ScratchConfig):
        if f.name == name:
            return f.metadata["title"], f.metadata["help"]
    raise KeyError(f"scratch.{name} is not an option")


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
