"""Running a SAM 2 model at another input size with the same weights.

No SAM 2 weight depends on the input size: Hiera interpolates its positional embedding to the
feature map, everything else is convolutional or attention. Only the config's sizes do (image,
FPN feature maps, prompt-encoder grid, memory-attention RoPE grid), so a model is moved to size
``S`` by rebuilding it from a config at ``S`` and loading the same state dict strictly. Fine-tuning
at ``scratch.resolution`` uses this, and LoRA adapters trained at that size are loaded onto a base
rebuilt the same way, so tracking runs at the size a model was trained at.
"""

from __future__ import annotations

from transformers import Sam2VideoConfig, Sam2VideoModel

__all__ = ["config_with_image_size", "image_size", "with_image_size"]


def image_size(config: Sam2VideoConfig) -> int:
    """The input size a config runs at (transformers stores an int or a [size, size] pair)."""
    size = config.image_size
    return int(size[0] if isinstance(size, list | tuple) else size)


def config_with_image_size(config: Sam2VideoConfig, size: int) -> Sam2VideoConfig:
    """A copy of ``config`` whose resolution-dependent sizes are those of input size ``size``."""
    if size < 64 or size % 32:
        raise ValueError(f"image size must be a multiple of 32 and >= 64, got {size}")
    config = config.__class__.from_dict(config.to_dict())
    config.image_size = size
    config.prompt_encoder_config.image_size = size
    config.vision_config.backbone_config.image_size = [size, size]
    config.vision_config.backbone_feature_sizes = [[size // s] * 2 for s in (4, 8, 16)]
    config.memory_attention_rope_feat_sizes = [size // 16, size // 16]
    return config


def with_image_size(model: Sam2VideoModel, size: int) -> Sam2VideoModel:
    """``model`` itself if it already runs at ``size``, else a copy rebuilt at ``size``
    (same weights, device, dtype and train/eval mode)."""
    if image_size(model.config) == size:
        return model
    param = next(model.parameters())
    resized = Sam2VideoModel(config_with_image_size(model.config, size))
    resized = resized.to(device=param.device, dtype=param.dtype)
    from .heads import copy_heads, without_heads

    resized.load_state_dict(without_heads(model.state_dict()), strict=True)
    copy_heads(model, resized)
    return resized.train(model.training)
