"""Random SAM 2 configurations used by tests and benchmarks, and device selection."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from transformers import Sam2VideoModel

from napari_cellsam2.model import device as device_mod
from napari_cellsam2.model.device import autocast_context, resolve_device
from napari_cellsam2.model.tiny import build_random_model, hiera_tiny_config, tiny_config
from sam2_reference import track_point


def test_tiny_model_is_small_seeded_and_predicts_objects():
    a = build_random_model(tiny_config())
    b = build_random_model(tiny_config(), seed=0)
    c = build_random_model(tiny_config(), seed=1)
    assert not a.training
    assert 2_000_000 < sum(p.numel() for p in a.parameters()) < 2_600_000
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["mask_decoder.iou_token.weight"], sc["mask_decoder.iou_token.weight"])
    assert torch.all(a.mask_decoder.pred_obj_score_head.proj_out.bias == 10.0)
    assert torch.equal(
        a.shared_image_embedding.positional_embedding,
        a.prompt_encoder.shared_embedding.positional_embedding,
    )

    video = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    logits = track_point(a, video, (100.0, 60.0))
    assert logits.shape == (2, 64, 64)
    # "object present": real, prompt-dependent logits rather than SAM 2's no-object fill (-1024)
    assert logits.abs().max() < 10 and logits.std() > 0
    other = track_point(a, video, (30.0, 200.0))
    assert (logits[0] - other[0]).abs().max() > 1e-4


def test_without_bias_random_model_reports_no_object():
    model = build_random_model(tiny_config(), object_score_bias=None)
    video = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    logits = track_point(model, video, (100.0, 60.0))
    assert torch.all(logits == -1024.0)


def test_tiny_config_other_size_and_validation():
    cfg = tiny_config(128)
    assert cfg.image_size == 128
    assert cfg.vision_config.backbone_feature_sizes == [[32, 32], [16, 16], [8, 8]]
    assert cfg.memory_attention_rope_feat_sizes == [8, 8]
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_config(100)


def test_hiera_tiny_config_is_the_real_architecture():
    cfg = hiera_tiny_config()
    backbone = cfg.vision_config.backbone_config
    assert backbone.blocks_per_stage == [1, 2, 7, 2]
    assert backbone.embed_dim_per_stage == [96, 192, 384, 768]
    assert backbone.global_attention_blocks == [5, 7, 9]
    assert cfg.image_size == 1024
    with torch.device("meta"):  # count parameters without allocating 39 M floats
        model = Sam2VideoModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == 38_962_498


# --- device ---------------------------------------------------------------------------------


def test_resolve_device_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("AUTO") == torch.device("cuda")


def test_resolve_device_explicit_and_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="not a valid torch device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def test_autocast_context():
    with autocast_context(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert isinstance(autocast_context("cpu"), contextlib.nullcontext)
    with warnings.catch_warnings():  # torch warns when CUDA is absent; the object is what counts
        warnings.simplefilter("ignore", UserWarning)
        cuda_ctx = autocast_context("cuda")
    assert isinstance(cuda_ctx, torch.autocast)
    assert cuda_ctx.fast_dtype == torch.bfloat16


def test_precision_choices():
    assert isinstance(autocast_context("cpu", "fp32"), contextlib.nullcontext)
    with pytest.raises(ValueError, match="bf16 precision needs a CUDA device"):
        autocast_context("cpu", "bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_context("cpu", "fp16")
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    with autocast_context("cuda", "fp32"):  # strict fp32: no TF32 inside, restored after
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_strict_fp32_blocks_in_two_threads_share_the_tf32_switch():
    """The tracker encodes a frame in one thread while it tracks in another, each block in
    strict fp32 on CUDA. When the first block ended, it switched TF32 back on under the
    other; when they ended in the other order, TF32 stayed off for good. (The flags are plain
    settings, so this runs on the CPU build too.)"""
    from napari_cellsam2.model import device

    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = flags[0].allow_tf32, flags[1].allow_tf32
    try:
        flags[0].allow_tf32 = flags[1].allow_tf32 = True
        encode, track = device._no_tf32(), device._no_tf32()
        encode.__enter__()
        track.__enter__()
        encode.__exit__(None, None, None)  # the encode ends while the tracking step runs
        assert (flags[0].allow_tf32, flags[1].allow_tf32) == (False, False)
        track.__exit__(None, None, None)
        assert (flags[0].allow_tf32, flags[1].allow_tf32) == (True, True)
    finally:
        flags[0].allow_tf32, flags[1].allow_tf32 = before
