"""Load Meta's original SAM 2 / SAM 2.1 ``.pt`` checkpoints into transformers' ``Sam2VideoModel``.

Meta's checkpoints (``{"model": state_dict}``) name parameters after Meta's modules
(``image_encoder.trunk...``, ``sam_mask_decoder...``); transformers renamed most of them and made
two structural changes: the four point-embedding tables are one ``(4, C)`` table, and the prompt
encoder's random positional matrix is also stored as the model's ``shared_image_embedding``.
The renames below are one bidirectional table, so the same rules convert Meta -> HF (loading)
and HF -> Meta (writing Meta-format files for tests); MLP layer indices and the mask
downsampler's ``nn.Sequential`` indices are renumbered from the depth found in the state dict.

The four official sizes (tiny, small, base-plus, large; SAM 2 and 2.1) are recognised from the
tensors (patch-embedding width and blocks per Hiera stage). Other architectures (e.g. the tiny
test configuration) need an explicit ``config``: attention heads, global-attention blocks and the
image size are not recorded in the weights, and guessing them would give silently wrong models.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Sam2HieraDetConfig,
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoModel,
    Sam2VideoPromptEncoderConfig,
    Sam2VisionConfig,
)

__all__ = [
    "CheckpointFormatError",
    "MetaCheckpointInfo",
    "hf_to_meta_state_dict",
    "infer_meta_config",
    "load_meta_checkpoint",
    "meta_to_hf_state_dict",
    "read_torch_state_dict",
]


class CheckpointFormatError(ValueError):
    """A file is not a readable SAM 2 checkpoint (or not one of the expected architecture)."""


# (Meta key template, HF key template). Placeholders: {n} an integer (same on both sides),
# {w} a parameter leaf name, {mlp} an MLP layer (Meta ``layers.K``; HF ``proj_in`` / ``layers.K-1``
# / ``proj_out``), {ds} a mask-downsampler layer (Meta ``encoder.K``; HF ``layers.K//3.conv`` /
# ``layers.K//3.layer_norm`` / ``final_conv``).
_RENAMES: tuple[tuple[str, str], ...] = (
    # Hiera image encoder and FPN neck
    (
        "image_encoder.trunk.patch_embed.proj.{w}",
        "vision_encoder.backbone.patch_embed.projection.{w}",
    ),
    ("image_encoder.trunk.pos_embed", "vision_encoder.backbone.pos_embed"),
    ("image_encoder.trunk.pos_embed_window", "vision_encoder.backbone.pos_embed_window"),
    (
        "image_encoder.trunk.blocks.{n}.norm1.{w}",
        "vision_encoder.backbone.blocks.{n}.layer_norm1.{w}",
    ),
    (
        "image_encoder.trunk.blocks.{n}.norm2.{w}",
        "vision_encoder.backbone.blocks.{n}.layer_norm2.{w}",
    ),
    (
        "image_encoder.trunk.blocks.{n}.attn.qkv.{w}",
        "vision_encoder.backbone.blocks.{n}.attn.qkv.{w}",
    ),
    (
        "image_encoder.trunk.blocks.{n}.attn.proj.{w}",
        "vision_encoder.backbone.blocks.{n}.attn.proj.{w}",
    ),
    ("image_encoder.trunk.blocks.{n}.proj.{w}", "vision_encoder.backbone.blocks.{n}.proj.{w}"),
    (
        "image_encoder.trunk.blocks.{n}.mlp.{mlp}.{w}",
        "vision_encoder.backbone.blocks.{n}.mlp.{mlp}.{w}",
    ),
    ("image_encoder.neck.convs.{n}.conv.{w}", "vision_encoder.neck.convs.{n}.{w}"),
    # prompt encoder (point embeddings and the positional matrix are handled structurally)
    ("sam_prompt_encoder.mask_downscaling.0.{w}", "prompt_encoder.mask_embed.conv1.{w}"),
    ("sam_prompt_encoder.mask_downscaling.1.{w}", "prompt_encoder.mask_embed.layer_norm1.{w}"),
    ("sam_prompt_encoder.mask_downscaling.3.{w}", "prompt_encoder.mask_embed.conv2.{w}"),
    ("sam_prompt_encoder.mask_downscaling.4.{w}", "prompt_encoder.mask_embed.layer_norm2.{w}"),
    ("sam_prompt_encoder.mask_downscaling.6.{w}", "prompt_encoder.mask_embed.conv3.{w}"),
    ("sam_prompt_encoder.no_mask_embed.{w}", "prompt_encoder.no_mask_embed.{w}"),
    ("sam_prompt_encoder.not_a_point_embed.{w}", "prompt_encoder.not_a_point_embed.{w}"),
    # mask decoder
    ("sam_mask_decoder.iou_token.{w}", "mask_decoder.iou_token.{w}"),
    ("sam_mask_decoder.mask_tokens.{w}", "mask_decoder.mask_tokens.{w}"),
    ("sam_mask_decoder.obj_score_token.{w}", "mask_decoder.obj_score_token.{w}"),
    ("sam_mask_decoder.conv_s{n}.{w}", "mask_decoder.conv_s{n}.{w}"),
    ("sam_mask_decoder.output_upscaling.0.{w}", "mask_decoder.upscale_conv1.{w}"),
    ("sam_mask_decoder.output_upscaling.1.{w}", "mask_decoder.upscale_layer_norm.{w}"),
    ("sam_mask_decoder.output_upscaling.3.{w}", "mask_decoder.upscale_conv2.{w}"),
    (
        "sam_mask_decoder.iou_prediction_head.{mlp}.{w}",
        "mask_decoder.iou_prediction_head.{mlp}.{w}",
    ),
    (
        "sam_mask_decoder.pred_obj_score_head.{mlp}.{w}",
        "mask_decoder.pred_obj_score_head.{mlp}.{w}",
    ),
    (
        "sam_mask_decoder.output_hypernetworks_mlps.{n}.{mlp}.{w}",
        "mask_decoder.output_hypernetworks_mlps.{n}.{mlp}.{w}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.{attn}.out_proj.{w}",
        "mask_decoder.transformer.layers.{n}.{attn}.o_proj.{w}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.{attn}.{qkv}.{w}",
        "mask_decoder.transformer.layers.{n}.{attn}.{qkv}.{w}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.norm{m}.{w}",
        "mask_decoder.transformer.layers.{n}.layer_norm{m}.{w}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.mlp.{mlp}.{w}",
        "mask_decoder.transformer.layers.{n}.mlp.{mlp}.{w}",
    ),
    (
        "sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.{w}",
        "mask_decoder.transformer.final_attn_token_to_image.o_proj.{w}",
    ),
    (
        "sam_mask_decoder.transformer.final_attn_token_to_image.{qkv}.{w}",
        "mask_decoder.transformer.final_attn_token_to_image.{qkv}.{w}",
    ),
    (
        "sam_mask_decoder.transformer.norm_final_attn.{w}",
        "mask_decoder.transformer.layer_norm_final_attn.{w}",
    ),
    # memory attention
    (
        "memory_attention.layers.{n}.{attn}.out_proj.{w}",
        "memory_attention.layers.{n}.{attn}.o_proj.{w}",
    ),
    (
        "memory_attention.layers.{n}.{attn}.{qkv}.{w}",
        "memory_attention.layers.{n}.{attn}.{qkv}.{w}",
    ),
    ("memory_attention.layers.{n}.norm{m}.{w}", "memory_attention.layers.{n}.layer_norm{m}.{w}"),
    ("memory_attention.layers.{n}.linear{m}.{w}", "memory_attention.layers.{n}.linear{m}.{w}"),
    ("memory_attention.norm.{w}", "memory_attention.layer_norm.{w}"),
    # memory encoder
    ("memory_encoder.mask_downsampler.{ds}.{w}", "memory_encoder.mask_downsampler.{ds}.{w}"),
    ("memory_encoder.pix_feat_proj.{w}", "memory_encoder.feature_projection.{w}"),
    ("memory_encoder.out_proj.{w}", "memory_encoder.projection.{w}"),
    (
        "memory_encoder.fuser.layers.{n}.dwconv.{w}",
        "memory_encoder.memory_fuser.layers.{n}.depthwise_conv.{w}",
    ),
    (
        "memory_encoder.fuser.layers.{n}.norm.{w}",
        "memory_encoder.memory_fuser.layers.{n}.layer_norm.{w}",
    ),
    (
        "memory_encoder.fuser.layers.{n}.pwconv{m}.{w}",
        "memory_encoder.memory_fuser.layers.{n}.pointwise_conv{m}.{w}",
    ),
    ("memory_encoder.fuser.layers.{n}.gamma", "memory_encoder.memory_fuser.layers.{n}.scale"),
    # top-level parameters of the tracker
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("obj_ptr_proj.{mlp}.{w}", "object_pointer_proj.{mlp}.{w}"),
    ("obj_ptr_tpos_proj.{w}", "temporal_positional_encoding_projection_layer.{w}"),
    ("mask_downsample.{w}", "mask_downsample.{w}"),
)

_META_POINT_EMBED = "sam_prompt_encoder.point_embeddings.{i}.weight"
_META_POS_MATRIX = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_HF_POINT_EMBED = "prompt_encoder.point_embed.weight"
_HF_POS_MATRIX = "prompt_encoder.shared_embedding.positional_embedding"
_HF_SHARED_POS = "shared_image_embedding.positional_embedding"
_META_PATCH = "image_encoder.trunk.patch_embed.proj.weight"

_COMMON = {
    "n": r"(?P<n>\d+)",
    "m": r"(?P<m>\d+)",
    "w": r"(?P<w>weight|bias)",
    "attn": (
        r"(?P<attn>self_attn|cross_attn_token_to_image|cross_attn_image_to_token|cross_attn_image)"
    ),
    "qkv": r"(?P<qkv>q_proj|k_proj|v_proj)",
}
_SIDE_SPECIFIC = {
    "meta": {"mlp": r"(?P<mlp>layers\.\d+)", "ds": r"(?P<ds>encoder\.\d+)"},
    "hf": {
        "mlp": r"(?P<mlp>proj_in|proj_out|layers\.\d+)",
        "ds": r"(?P<ds>layers\.\d+\.conv|layers\.\d+\.layer_norm|final_conv)",
    },
}


def _compile(template: str, side: str) -> re.Pattern[str]:
    pieces = re.split(r"(\{\w+\})", template)
    fields = {**_COMMON, **_SIDE_SPECIFIC[side]}
    out = [fields[p[1:-1]] if p.startswith("{") else re.escape(p) for p in pieces]
    return re.compile("".join(out) + r"\Z")


_PATTERNS = {
    side: [(_compile(pair[i], side), pair[1 - i]) for pair in _RENAMES]
    for i, side in enumerate(("meta", "hf"))
}


def _match(key: str, side: str) -> tuple[re.Match[str], str] | None:
    for pattern, target in _PATTERNS[side]:
        found = pattern.match(key)
        if found:
            return found, target
    return None


def _layer_counts(matches: list[tuple[str, re.Match[str]]], side: str) -> dict[str, int]:
    """Number of layers per MLP / downsampler instance (keyed by the text before the layer)."""
    indices: dict[str, set[str]] = defaultdict(set)
    for key, found in matches:
        for group in ("mlp", "ds"):
            if found.groupdict().get(group):
                prefix = key[: found.start(group)] + group
                indices[prefix].add(found.group(group))
    counts = {}
    for prefix, names in indices.items():
        if side == "meta":
            counts[prefix] = max(int(n.split(".")[1]) for n in names) + 1
        elif prefix.endswith("mlp"):
            counts[prefix] = len({n for n in names if n.startswith("layers.")}) + 2
        else:  # HF downsampler: conv+norm per layer, then the final conv (Meta index 3 * n)
            counts[prefix] = (
                3 * len({n.split(".")[1] for n in names if n.startswith("layers.")}) + 1
            )
    return counts


def _convert_special(group: str, value: str, count: int, to_side: str) -> str:
    """Renumber one MLP or mask-downsampler layer name for the other side."""
    if group == "mlp":
        if to_side == "hf":
            k = int(value.split(".")[1])
            return "proj_in" if k == 0 else "proj_out" if k == count - 1 else f"layers.{k - 1}"
        if value == "proj_in":
            return "layers.0"
        if value == "proj_out":
            return f"layers.{count - 1}"
        return f"layers.{int(value.split('.')[1]) + 1}"
    if to_side == "hf":
        k = int(value.split(".")[1])
        if k == count - 1:
            return "final_conv"
        kind = {0: "conv", 1: "layer_norm"}.get(k % 3)
        if kind is None:  # index 2 of each triple is the activation: it has no parameters
            raise CheckpointFormatError(f"unexpected mask-downsampler parameter index {k}")
        return f"layers.{k // 3}.{kind}"
    if value == "final_conv":
        return f"encoder.{count - 1}"
    _, layer, kind = value.split(".")
    return f"encoder.{3 * int(layer) + (0 if kind == 'conv' else 1)}"


def _rename_all(
    state_dict: Mapping[str, torch.Tensor], from_side: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key that the table knows; return (renamed, keys it does not know)."""
    to_side = "hf" if from_side == "meta" else "meta"
    matches: list[tuple[str, re.Match[str], str]] = []
    unknown: list[str] = []
    for key in state_dict:
        hit = _match(key, from_side)
        if hit is None:
            unknown.append(key)
        else:
            matches.append((key, *hit))
    counts = _layer_counts([(k, m) for k, m, _ in matches], from_side)
    renamed: dict[str, torch.Tensor] = {}
    for key, found, target in matches:
        values = dict(found.groupdict())
        for group in ("mlp", "ds"):
            if values.get(group):
                count = counts[key[: found.start(group)] + group]
                values[group] = _convert_special(group, values[group], count, to_side)
        renamed[target.format(**values)] = state_dict[key]
    return renamed, unknown


def meta_to_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Meta SAM 2 state dict -> (transformers ``Sam2VideoModel`` state dict, unknown Meta keys)."""
    meta = dict(state_dict)
    points = []
    i = 0
    while _META_POINT_EMBED.format(i=i) in meta:
        points.append(meta.pop(_META_POINT_EMBED.format(i=i)))
        i += 1
    pos_matrix = meta.pop(_META_POS_MATRIX, None)
    hf, unknown = _rename_all(meta, "meta")
    if points:
        hf[_HF_POINT_EMBED] = torch.cat(points, dim=0)
    if pos_matrix is not None:
        hf[_HF_POS_MATRIX] = pos_matrix
        hf[_HF_SHARED_POS] = pos_matrix
    return hf, unknown


def hf_to_meta_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``Sam2VideoModel`` state dict -> Meta SAM 2 state dict (inverse mapping).

    Meta stores one positional matrix, so the model's ``shared_image_embedding`` must equal the
    prompt encoder's (true for released weights and for :func:`build_random_model`).
    """
    hf = dict(state_dict)
    for key in (_HF_POINT_EMBED, _HF_POS_MATRIX, _HF_SHARED_POS):
        if key not in hf:
            raise CheckpointFormatError(f"not a Sam2VideoModel state dict: {key!r} is missing")
    shared = hf.pop(_HF_SHARED_POS)
    pos_matrix = hf.pop(_HF_POS_MATRIX)
    if not torch.equal(shared, pos_matrix):
        raise CheckpointFormatError(
            f"{_HF_SHARED_POS} differs from {_HF_POS_MATRIX}; Meta's format has one positional "
            "matrix, so this model cannot be written as a Meta checkpoint"
        )
    points = hf.pop(_HF_POINT_EMBED)
    meta, unknown = _rename_all(hf, "hf")
    if unknown:
        raise CheckpointFormatError(f"no Meta name for these keys: {sorted(unknown)}")
    for i, row in enumerate(points.split(1, dim=0)):
        meta[_META_POINT_EMBED.format(i=i)] = row.clone()
    meta[_META_POS_MATRIX] = pos_matrix
    return meta


# Official Hiera backbones, keyed by (patch-embedding width, blocks per stage).
_OFFICIAL: dict[tuple[int, tuple[int, ...]], tuple[str, dict[str, Any]]] = {
    (96, (1, 2, 7, 2)): (
        "tiny",
        {"num_attention_heads_per_stage": [1, 2, 4, 8], "global_attention_blocks": [5, 7, 9]},
    ),
    (96, (1, 2, 11, 2)): (
        "small",
        {"num_attention_heads_per_stage": [1, 2, 4, 8], "global_attention_blocks": [7, 10, 13]},
    ),
    (112, (2, 3, 16, 3)): (
        "base-plus",
        {
            "num_attention_heads_per_stage": [2, 4, 8, 16],
            "global_attention_blocks": [12, 16, 20],
            "window_positional_embedding_background_size": [14, 14],
        },
    ),
    (144, (2, 6, 36, 4)): (
        "large",
        {
            "num_attention_heads_per_stage": [2, 4, 8, 16],
            "global_attention_blocks": [23, 33, 43],
            "window_size_per_stage": [8, 4, 16, 8],
        },
    ),
}


@dataclass(frozen=True)
class MetaCheckpointInfo:
    """What was recognised in a Meta checkpoint."""

    size: str  # "tiny", "small", "base-plus", "large" or "custom" (explicit config)
    version: str  # "2.1" or "2"
    embed_dims: tuple[int, ...]
    blocks_per_stage: tuple[int, ...]


def _backbone_shape(meta: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Stage widths and blocks per stage, read from each Hiera block's output LayerNorm width."""
    widths: dict[int, int] = {}
    for key, value in meta.items():
        found = re.fullmatch(r"image_encoder\.trunk\.blocks\.(\d+)\.norm2\.weight", key)
        if found:
            widths[int(found.group(1))] = int(value.shape[0])
    dims: list[int] = []
    blocks: list[int] = []
    for index in sorted(widths):
        if not dims or widths[index] != dims[-1]:
            dims.append(widths[index])
            blocks.append(0)
        blocks[-1] += 1
    return tuple(dims), tuple(blocks)


def _recognise(
    meta: Mapping[str, torch.Tensor], source: str
) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """(stage widths, blocks per stage, "2" or "2.1") of a Meta SAM 2 state dict."""
    if _META_PATCH not in meta:
        sample = ", ".join(sorted(meta)[:5])
        raise CheckpointFormatError(
            f"{source} is not a SAM 2 checkpoint: it has no {_META_PATCH!r} (first keys: {sample})"
        )
    dims, blocks = _backbone_shape(meta)
    return dims, blocks, "2.1" if "no_obj_embed_spatial" in meta else "2"


def infer_meta_config(
    meta: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> tuple[Sam2VideoConfig, MetaCheckpointInfo]:
    """Recognise an official SAM 2 / 2.1 size from a Meta state dict and build its config."""
    dims, blocks, version = _recognise(meta, source)
    embed = int(meta[_META_PATCH].shape[0])
    official = _OFFICIAL.get((embed, blocks))
    if official is None:
        raise CheckpointFormatError(
            f"{source} has a SAM 2 architecture that is not one of the official sizes "
            f"(stage widths {list(dims)}, blocks per stage {list(blocks)}); pass the matching "
            "Sam2VideoConfig explicitly (config=...)"
        )
    size, backbone_kwargs = official
    backbone = Sam2HieraDetConfig(
        hidden_size=embed,
        embed_dim_per_stage=list(dims),
        blocks_per_stage=list(blocks),
        **backbone_kwargs,
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=list(reversed(dims)))
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(),
        enable_temporal_pos_encoding_for_object_pointers=version == "2.1",
        enable_occlusion_spatial_embedding=version == "2.1",
    )
    return config, MetaCheckpointInfo(size, version, dims, blocks)


def read_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt`` file safely (``weights_only=True``) and return its tensor state dict.

    Accepts ``{"model": state_dict}`` (Meta's layout) or a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointFormatError(
            f"{path} is not a readable PyTorch checkpoint (torch.load with weights_only=True "
            f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointFormatError(
            f"{path} does not hold a state dict (expected {{'model': {{name: tensor}}}}); "
            "it is not a SAM 2 checkpoint"
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        raise CheckpointFormatError(f"{path}: the state dict holds non-tensor values")
    return tensors


def load_meta_checkpoint(
    path: str | Path, config: Sam2VideoConfig | None = None
) -> tuple[Sam2VideoModel, MetaCheckpointInfo]:
    """Build a ``Sam2VideoModel`` (CPU, eval, fp32) from a Meta SAM 2 / 2.1 ``.pt`` file.

    The size is recognised from the tensors unless ``config`` is given. Loading is strict: any
    missing or unexpected parameter raises :class:`CheckpointFormatError` listing them.
    """
    path = Path(path)
    meta = read_torch_state_dict(path)
    if config is None:
        config, info = infer_meta_config(meta, str(path))
    else:
        dims, blocks, version = _recognise(meta, str(path))
        info = MetaCheckpointInfo("custom", version, dims, blocks)
    hf, unknown = meta_to_hf_state_dict(meta)
    model = Sam2VideoModel(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(hf))
    unexpected = sorted(set(unknown) | (set(hf) - expected))
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path} does not match the SAM 2 {info.size} architecture: "
            f"{len(missing)} missing parameter(s) {missing[:20]}, "
            f"{len(unexpected)} unexpected parameter(s) {unexpected[:20]}"
        )
    try:
        model.load_state_dict({k: v.float() for k, v in hf.items()}, strict=True)
    except RuntimeError as err:
        raise CheckpointFormatError(
            f"{path}: tensor shapes do not match the config: {err}"
        ) from err
    return model.float().eval(), info
