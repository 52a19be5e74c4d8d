"""Random-initialised SAM 2 models for tests and benchmarks (never for real tracking)."""

from __future__ import annotations

import torch
from transformers import (
    Sam2HieraDetConfig,
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoModel,
    Sam2VideoPromptEncoderConfig,
    Sam2VisionConfig,
)

from .resolution import config_with_image_size

__all__ = ["build_random_model", "hiera_tiny_config", "tiny_config"]


def tiny_config(image_size: int = 256) -> Sam2VideoConfig:
    """A ~2.4 M parameter SAM 2 video configuration, for tests and benchmarks only.

    Same architecture family as SAM 2.1 (Hiera backbone, FPN, memory attention/encoder) but
    shrunk so that a 6-frame propagation takes a fraction of a second on a CPU. The global
    attention block (3) is deliberately not a query-pooling block (those crash).
    """
    dims = [8, 16, 32, 64]
    backbone = Sam2HieraDetConfig(
        hidden_size=dims[0],
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[1, 2, 4, 8],
        blocks_per_stage=[1, 1, 2, 1],
        global_attention_blocks=[3],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(reversed(dims)),
        fpn_hidden_size=128,
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=128, patch_size=16),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=128),
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=256,
    )
    return config_with_image_size(config, image_size)


def hiera_tiny_config(image_size: int = 1024) -> Sam2VideoConfig:
    """The real sam2.1-hiera-tiny architecture (39.0 M parameters), for random-weight benchmarks.

    transformers' default-sized configs are exactly hiera-tiny (Hiera blocks [1, 2, 7, 2], embed
    96, heads [1, 2, 4, 8], global attention in blocks [5, 7, 9], window sizes [8, 4, 14, 7],
    FPN/decoder/memory width 256), matching the hub config of facebook/sam2.1-hiera-tiny.
    ``image_size`` other than 1024 rescales only the resolution-dependent sizes.
    """
    backbone = Sam2HieraDetConfig(
        hidden_size=96,
        embed_dim_per_stage=[96, 192, 384, 768],
        num_attention_heads_per_stage=[1, 2, 4, 8],
        blocks_per_stage=[1, 2, 7, 2],
        global_attention_blocks=[5, 7, 9],
        window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[7, 7],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[768, 384, 192, 96],
        fpn_hidden_size=256,
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=256, patch_size=16),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=256),
    )
    return config_with_image_size(config, image_size)


def build_random_model(
    config: Sam2VideoConfig, seed: int = 0, object_score_bias: float | None = 10.0
) -> Sam2VideoModel:
    """Build a randomly initialised ``Sam2VideoModel`` reproducibly (seeded), in eval mode.

    A random model's object-score head outputs ~0 or negative logits, so SAM 2 decides "no object"
    and replaces every mask by the no-object value: masks are empty and mask gradients are zero,
    which makes tracking tests and training probes meaningless. Raising
    ``mask_decoder.pred_obj_score_head.proj_out.bias`` to ``object_score_bias`` makes the model
    predict "object present" so masks actually depend on prompts and weights. ``None`` leaves the
    random initialisation untouched.

    Like released SAM 2 weights (Meta stores a single matrix), the model's image positional
    embedding is set equal to the prompt encoder's, so random models survive a Meta-format
    round trip.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam2VideoModel(config)
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    if object_score_bias is not None:
        with torch.no_grad():
            model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(float(object_score_bias))
    return model.eval()
