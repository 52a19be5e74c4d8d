"""Meta SAM 2 `.pt` checkpoints: key mapping, size recognition, loading and clear errors."""

from __future__ import annotations

import json
import pickle
from functools import cache
from pathlib import Path

import pytest
import torch
from transformers import Sam2VideoModel

from napari_cellsam2.model.loading import load_model
from napari_cellsam2.model.meta_checkpoint import (
    CheckpointFormatError,
    hf_to_meta_state_dict,
    infer_meta_config,
    load_meta_checkpoint,
    meta_to_hf_state_dict,
)
from napari_cellsam2.model.tiny import build_random_model, hiera_tiny_config, tiny_config
from sam2_reference import track_point

# Real parameter names from Meta's SAM 2.1 code (sam2 1.1.0) and transformers' names for them.
META_TO_HF_EXAMPLES = dict(
    [
        (
            "image_encoder.trunk.patch_embed.proj.weight",
            "vision_encoder.backbone.patch_embed.projection.weight",
        ),
        (
            "image_encoder.trunk.blocks.0.norm1.bias",
            "vision_encoder.backbone.blocks.0.layer_norm1.bias",
        ),
        (
            "image_encoder.trunk.blocks.1.mlp.layers.0.weight",
            "vision_encoder.backbone.blocks.1.mlp.proj_in.weight",
        ),
        (
            "image_encoder.trunk.blocks.1.mlp.layers.1.bias",
            "vision_encoder.backbone.blocks.1.mlp.proj_out.bias",
        ),
        ("image_encoder.neck.convs.2.conv.weight", "vision_encoder.neck.convs.2.weight"),
        (
            "sam_prompt_encoder.mask_downscaling.4.weight",
            "prompt_encoder.mask_embed.layer_norm2.weight",
        ),
        ("sam_prompt_encoder.mask_downscaling.6.bias", "prompt_encoder.mask_embed.conv3.bias"),
        ("sam_mask_decoder.output_upscaling.1.weight", "mask_decoder.upscale_layer_norm.weight"),
        ("sam_mask_decoder.output_upscaling.3.bias", "mask_decoder.upscale_conv2.bias"),
        (
            "sam_mask_decoder.iou_prediction_head.layers.0.weight",
            "mask_decoder.iou_prediction_head.proj_in.weight",
        ),
        (
            "sam_mask_decoder.iou_prediction_head.layers.1.weight",
            "mask_decoder.iou_prediction_head.layers.0.weight",
        ),
        (
            "sam_mask_decoder.iou_prediction_head.layers.2.bias",
            "mask_decoder.iou_prediction_head.proj_out.bias",
        ),
        (
            "sam_mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
            "mask_decoder.output_hypernetworks_mlps.3.proj_out.weight",
        ),
        (
            "sam_mask_decoder.pred_obj_score_head.layers.2.bias",
            "mask_decoder.pred_obj_score_head.proj_out.bias",
        ),
        (
            "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight",
            "mask_decoder.transformer.layers.1.cross_attn_image_to_token.o_proj.weight",
        ),
        (
            "sam_mask_decoder.transformer.layers.0.mlp.layers.1.weight",
            "mask_decoder.transformer.layers.0.mlp.proj_out.weight",
        ),
        (
            "sam_mask_decoder.transformer.layers.0.norm4.bias",
            "mask_decoder.transformer.layers.0.layer_norm4.bias",
        ),
        (
            "sam_mask_decoder.transformer.norm_final_attn.weight",
            "mask_decoder.transformer.layer_norm_final_attn.weight",
        ),
        (
            "memory_attention.layers.0.cross_attn_image.out_proj.bias",
            "memory_attention.layers.0.cross_attn_image.o_proj.bias",
        ),
        ("memory_attention.layers.0.norm3.weight", "memory_attention.layers.0.layer_norm3.weight"),
        ("memory_attention.norm.bias", "memory_attention.layer_norm.bias"),
        (
            "memory_encoder.mask_downsampler.encoder.0.weight",
            "memory_encoder.mask_downsampler.layers.0.conv.weight",
        ),
        (
            "memory_encoder.mask_downsampler.encoder.4.bias",
            "memory_encoder.mask_downsampler.layers.1.layer_norm.bias",
        ),
        (
            "memory_encoder.mask_downsampler.encoder.12.weight",
            "memory_encoder.mask_downsampler.final_conv.weight",
        ),
        ("memory_encoder.fuser.layers.1.gamma", "memory_encoder.memory_fuser.layers.1.scale"),
        (
            "memory_encoder.fuser.layers.0.dwconv.weight",
            "memory_encoder.memory_fuser.layers.0.depthwise_conv.weight",
        ),
        ("memory_encoder.pix_feat_proj.weight", "memory_encoder.feature_projection.weight"),
        ("memory_encoder.out_proj.bias", "memory_encoder.projection.bias"),
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
        ("obj_ptr_proj.layers.1.weight", "object_pointer_proj.layers.0.weight"),
        ("obj_ptr_tpos_proj.bias", "temporal_positional_encoding_projection_layer.bias"),
    ]
)


@pytest.fixture(scope="module")
def tiny_model() -> Sam2VideoModel:
    return build_random_model(tiny_config())


@pytest.fixture(scope="module")
def meta_file(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("meta") / "sam2.1_tiny_test.pt"
    torch.save({"model": hf_to_meta_state_dict(tiny_model.state_dict())}, path)
    return path


def test_known_meta_names_map_to_transformers_names(tiny_model):
    meta = hf_to_meta_state_dict(tiny_model.state_dict())
    present = {k: v for k, v in META_TO_HF_EXAMPLES.items() if k in meta}
    # the tiny model has all of these but the hypernetwork #3 / 4th downsampler names
    assert len(present) >= len(META_TO_HF_EXAMPLES) - 1
    hf, unknown = meta_to_hf_state_dict(meta)
    assert unknown == []
    for meta_key, hf_key in present.items():
        assert hf[hf_key] is meta[meta_key]


def test_structural_changes_point_embeddings_and_positional_matrix(tiny_model):
    sd = tiny_model.state_dict()
    meta = hf_to_meta_state_dict(sd)
    points = [meta[f"sam_prompt_encoder.point_embeddings.{i}.weight"] for i in range(4)]
    assert all(p.shape == (1, 128) for p in points)
    torch.testing.assert_close(torch.cat(points), sd["prompt_encoder.point_embed.weight"])
    assert "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in meta
    assert not any(
        k.startswith(("vision_encoder", "prompt_encoder.", "shared_image")) for k in meta
    )
    hf, unknown = meta_to_hf_state_dict(meta)
    assert unknown == []
    assert set(hf) == set(sd)
    assert all(torch.equal(hf[k], sd[k]) for k in sd)


def test_meta_and_hf_formats_give_identical_outputs(tiny_model, meta_file, tmp_path):
    loaded, info = load_meta_checkpoint(meta_file, config=tiny_config())
    assert info.size == "custom" and info.version == "2.1"
    assert info.embed_dims == (8, 16, 32, 64) and info.blocks_per_stage == (1, 1, 2, 1)
    reference = tiny_model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], reference[k]) for k in reference)
    # through load_model, next to the HF-format save of the same weights
    tiny_model.save_pretrained(tmp_path / "hf")
    via_meta = load_model(meta_file, "cpu", config=tiny_config())
    via_hf = load_model(tmp_path / "hf", "cpu")
    assert via_meta.kind == "meta" and via_hf.kind == "checkpoint"
    video = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    expected = track_point(via_hf.model, video, (40.0, 200.0))
    assert expected.abs().max() < 100  # real logits, not the no-object fill
    torch.testing.assert_close(
        track_point(via_meta.model, video, (40.0, 200.0)), expected, rtol=0, atol=0
    )


def _official_like(embed: int, blocks: list[int], v21: bool = True) -> dict[str, torch.Tensor]:
    """The tensors size recognition looks at, shaped like an official checkpoint's."""
    sd = {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(embed, 3, 7, 7)}
    index = 0
    for stage, count in enumerate(blocks):
        for _ in range(count):
            width = embed * 2**stage
            sd[f"image_encoder.trunk.blocks.{index}.norm2.weight"] = torch.empty(width)
            index += 1
    if v21:
        sd["no_obj_embed_spatial"] = torch.empty(1, 64)
    return sd


@pytest.mark.parametrize(
    ("embed", "blocks", "size", "params"),
    [
        (96, [1, 2, 7, 2], "tiny", 38_962_498),
        (96, [1, 2, 11, 2], "small", 46_060_354),
        (112, [2, 3, 16, 3], "base-plus", 80_850_178),
        (144, [2, 6, 36, 4], "large", 224_446_642),
    ],
)
def test_official_sizes_recognised(embed, blocks, size, params):
    config, info = infer_meta_config(_official_like(embed, blocks))
    assert info.size == size and info.version == "2.1"
    assert info.blocks_per_stage == tuple(blocks)
    assert config.enable_occlusion_spatial_embedding
    with torch.device("meta"):  # published sizes: 38.9 M / 46 M / 80.8 M / 224.4 M
        model = Sam2VideoModel(config)
    assert sum(p.numel() for p in model.parameters()) == params


def test_sam2_0_checkpoint_disables_2_1_features():
    config, info = infer_meta_config(_official_like(96, [1, 2, 7, 2], v21=False))
    assert info.version == "2"
    assert not config.enable_occlusion_spatial_embedding
    assert not config.enable_temporal_pos_encoding_for_object_pointers


def test_unknown_architecture_needs_explicit_config(meta_file):
    with pytest.raises(CheckpointFormatError, match=r"not one of the official sizes.*config="):
        load_meta_checkpoint(meta_file)
    with pytest.raises(CheckpointFormatError, match=meta_file.name):
        load_model(meta_file, "cpu")


def test_missing_and_unexpected_keys_are_listed(tiny_model, tmp_path):
    meta = hf_to_meta_state_dict(tiny_model.state_dict())
    del meta["sam_mask_decoder.iou_token.weight"]
    meta["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save({"model": meta}, path)
    with pytest.raises(CheckpointFormatError) as err:
        load_meta_checkpoint(path, config=tiny_config())
    message = str(err.value)
    assert "broken.pt" in message
    assert "mask_decoder.iou_token.weight" in message
    assert "sam_mask_decoder.extra_head.weight" in message


def test_shape_mismatch_with_given_config_is_clear(meta_file):
    config = tiny_config()
    config.memory_attention_feed_forward_hidden_size = 32  # checkpoint has 64
    with pytest.raises(CheckpointFormatError, match=r"(?s)shapes do not match.*linear1"):
        load_meta_checkpoint(meta_file, config=config)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointFormatError, match=r"notes\.pt is not a readable PyTorch"):
        load_model(path, "cpu")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"model": Path("/")}, f)  # an arbitrary object, refused by weights_only
    with pytest.raises(CheckpointFormatError, match=r"evil\.pt"):
        load_meta_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [
        {"model": {"foo.weight": torch.zeros(2)}},
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(10)},  # resnet-ish
        {"model": "nothing"},
    ],
)
def test_other_architectures_are_rejected(tmp_path, content):
    path = tmp_path / "resnet.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=r"resnet\.pt.*not a SAM 2 checkpoint"):
        load_model(path, "cpu")


def test_inverse_mapping_refuses_untied_positional_embeddings(tiny_model):
    sd = dict(tiny_model.state_dict())
    sd["shared_image_embedding.positional_embedding"] = torch.zeros_like(
        sd["shared_image_embedding.positional_embedding"]
    )
    with pytest.raises(CheckpointFormatError, match="one positional matrix"):
        hf_to_meta_state_dict(sd)


# --- the key map anchored in transformers' own conversion script ---------------------------------
# tests/fixtures/meta_keys/<arch>.json: Meta's parameter names for SAM 2.1 (from Meta's model code)
# and the HF name transformers' convert_sam2_video_to_hf.py gives each, written by
# scripts/meta_key_fixture.py (its docstring has the command and the commits). Our converter's
# round trips above cannot see a wrong entry in its table (it would be wrong both ways); these can.

META_KEY_FIXTURES = Path(__file__).parent / "fixtures" / "meta_keys"
ANCHOR_CONFIGS = {"hiera_tiny": hiera_tiny_config, "tiny": tiny_config}

# The only places where transformers' conversion is not a one-to-one rename: the four point
# embeddings become the rows of one table (in this order), and the prompt encoder's positional
# matrix is also stored as the model's shared image embedding.
MERGED_ROWS = {
    "prompt_encoder.point_embed.weight": [
        f"sam_prompt_encoder.point_embeddings.{i}.weight" for i in range(4)
    ]
}
DUPLICATED = {
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": {
        "prompt_encoder.shared_embedding.positional_embedding",
        "shared_image_embedding.positional_embedding",
    }
}


@cache
def _anchor(arch: str) -> tuple[dict, list[str], dict[str, list[str]]]:
    """(fixture, Meta keys in order, HF key -> the Meta keys it is made of, in row order)."""
    fixture = json.loads((META_KEY_FIXTURES / f"{arch}.json").read_text(encoding="utf-8"))
    meta_keys = list(dict.fromkeys(meta_key for meta_key, _ in fixture["pairs"]))
    sources: dict[str, list[str]] = {}
    for meta_key, hf_key in fixture["pairs"]:
        sources.setdefault(hf_key, []).append(meta_key)
    return fixture, meta_keys, sources


@cache
def _model_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the installed transformers' Sam2VideoModel (no memory allocated)."""
    with torch.device("meta"):
        model = Sam2VideoModel(ANCHOR_CONFIGS[arch]())
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _traced(tensor: torch.Tensor, meta_keys: list[str]) -> list[str]:
    """The Meta keys whose index tags a tensor carries (see the tagged state dicts below)."""
    return [meta_keys[int(tag)] for tag in tensor.flatten().tolist()]


@pytest.mark.parametrize("arch", sorted(ANCHOR_CONFIGS))
def test_anchor_fixture_has_only_the_known_structural_changes(arch):
    fixture, meta_keys, sources = _anchor(arch)
    repo, _, path = fixture["source"].partition(":")
    assert repo.startswith("huggingface/transformers@") and len(repo.split("@")[1]) == 40
    assert path.endswith("sam2_video/convert_sam2_video_to_hf.py")
    assert fixture["meta_keys_source"].startswith("facebookresearch/sam2@")
    assert fixture["rows"] == MERGED_ROWS
    many_to_one = {hf: metas for hf, metas in sources.items() if len(metas) > 1}
    assert many_to_one == MERGED_ROWS
    targets: dict[str, set[str]] = {}
    for meta_key, hf_key in fixture["pairs"]:
        targets.setdefault(meta_key, set()).add(hf_key)
    assert {m: hfs for m, hfs in targets.items() if len(hfs) > 1} == DUPLICATED
    assert len(fixture["pairs"]) == len(set(map(tuple, fixture["pairs"])))
    assert set(targets) == set(meta_keys)


@pytest.mark.parametrize("arch", sorted(ANCHOR_CONFIGS))
def test_anchor_hf_names_are_the_installed_models_names(arch):
    # a transformers upgrade that renames parameters makes the fixture stale: regenerate it
    _, _, sources = _anchor(arch)
    assert set(sources) == set(_model_shapes(arch))


@pytest.mark.parametrize("arch", sorted(ANCHOR_CONFIGS))
def test_meta_to_hf_names_match_transformers_conversion_script(arch):
    _, meta_keys, sources = _anchor(arch)
    # each Meta tensor holds its own index, so every converted tensor names its Meta source(s)
    meta = {key: torch.full((1, 1), float(i)) for i, key in enumerate(meta_keys)}
    hf, unknown = meta_to_hf_state_dict(meta)
    assert unknown == []
    assert set(hf) == set(sources)
    wrong = [
        (hf_key, _traced(hf[hf_key], meta_keys), expected)
        for hf_key, expected in sources.items()
        if _traced(hf[hf_key], meta_keys) != expected
    ]
    assert wrong == [], "(HF key, our Meta source(s), transformers' Meta source(s))"
    # the structural changes, explicitly: one table of four rows, one matrix under two names
    assert hf["prompt_encoder.point_embed.weight"].shape == (4, 1)
    for meta_key, hf_keys in DUPLICATED.items():
        assert all(_traced(hf[k], meta_keys) == [meta_key] for k in hf_keys)


@pytest.mark.parametrize("arch", sorted(ANCHOR_CONFIGS))
def test_hf_to_meta_names_match_transformers_conversion_script(arch):
    _, meta_keys, sources = _anchor(arch)
    index = {key: float(i) for i, key in enumerate(meta_keys)}
    # HF tensors tagged with the Meta keys transformers made them from (the merged point table
    # gets one row per Meta embedding; both copies of the positional matrix carry its tag)
    hf = {hf_key: torch.tensor([[index[m]] for m in metas]) for hf_key, metas in sources.items()}
    meta = hf_to_meta_state_dict(hf)
    assert set(meta) == set(meta_keys)
    wrong = [(k, _traced(v, meta_keys)) for k, v in meta.items() if _traced(v, meta_keys) != [k]]
    assert wrong == [], "(our Meta key, the Meta key transformers' HF name came from)"


def test_meta_shapes_convert_to_the_installed_models_shapes():
    # Meta's own hiera-tiny shapes, converted by our loader, are the shapes transformers expects
    fixture, _, _ = _anchor("hiera_tiny")
    with torch.device("meta"):
        meta = {key: torch.empty(shape) for key, shape in fixture["meta_shapes"].items()}
    hf, unknown = meta_to_hf_state_dict(meta)
    assert unknown == []
    assert {key: tuple(value.shape) for key, value in hf.items()} == _model_shapes("hiera_tiny")
