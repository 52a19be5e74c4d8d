"""Every access to transformers' private SAM 2 video internals, in one place.

Tested with ``transformers >= 5.20, < 5.25`` (the range pyproject pins). transformers does not
promise to keep any of what is below; when it changes, this module and the reference tests
(``tests/test_tracking_reference.py``, ``tests/test_training_forward.py``) are where it shows:

* the per-object output dicts of ``Sam2VideoInferenceSession`` (their keys, and that a session's
  ``output_dict_per_obj`` / ``frames_tracked_per_obj`` / ``processed_frames`` / ``cache`` may be
  replaced from outside), which the tracking session shares with transformers so that it can
  track one object at a time, prune memory and restore snapshots;
* the feature-cache class the tracking session's LRU cache extends;
* three private ``Sam2VideoModel`` helpers the training forward calls as they are, so that
  training computes exactly what the tracker computes (memory selection, object-pointer
  encoding and memory encoding);
* ``NO_OBJ_SCORE``, the logit transformers writes into the masks of absent objects.

Nothing else in the package imports from ``transformers.models.sam2_video.modeling_sam2_video``
or calls an underscore method of the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import transformers
from packaging.version import Version
from transformers import Sam2VideoInferenceSession, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import (
    NO_OBJ_SCORE,
    Sam2VideoInferenceCache,
)

__all__ = [
    "COND",
    "HIGH_RES_MASKS",
    "MASKMEM_FEATURES",
    "MASKMEM_POS_ENC",
    "NON_COND",
    "NO_OBJ_SCORE",
    "OBJECT_POINTER",
    "OBJECT_SCORE",
    "POINTER_KEYS",
    "PRED_MASKS",
    "TESTED_TRANSFORMERS",
    "VISION_FEATS",
    "VISION_POS",
    "InferenceCache",
    "empty_outputs",
    "encode_new_memory",
    "install_extra_token",
    "process_object_pointers",
    "recorded_decodes",
    "select_closest_cond_frames",
    "session_view",
    "share_object_outputs",
]

TESTED_TRANSFORMERS = (Version("5.20"), Version("5.25"))  # [low, high)

# Keys of transformers' per-object output dicts
COND, NON_COND = "cond_frame_outputs", "non_cond_frame_outputs"
MASKMEM_FEATURES, MASKMEM_POS_ENC = "maskmem_features", "maskmem_pos_enc"
OBJECT_POINTER, OBJECT_SCORE = "object_pointer", "object_score_logits"
HIGH_RES_MASKS, PRED_MASKS = "high_res_masks", "pred_masks"
# Keys of the image-feature entries a session cache stores and returns
VISION_FEATS, VISION_POS = "vision_feats", "vision_pos_embeds"
POINTER_KEYS = (OBJECT_POINTER, OBJECT_SCORE)  # what a frame beyond the memory window keeps

InferenceCache = Sam2VideoInferenceCache


def _check_version() -> None:
    low, high = TESTED_TRANSFORMERS
    found = Version(transformers.__version__)
    if not low <= found < high:
        warnings.warn(
            f"napari-cellsam2 was tested with transformers >= {low}, < {high}; found {found}. "
            "Its SAM 2 video internals may differ: run tests/test_tracking_reference.py",
            stacklevel=2,
        )


_check_version()


def empty_outputs() -> dict[str, dict[int, dict[str, Any]]]:
    """A new per-object output dict, as a transformers session creates it."""
    return {COND: {}, NON_COND: {}}


def session_view(
    height: int, width: int, device: torch.device, frames: Any, cache: InferenceCache
) -> Sam2VideoInferenceSession:
    """A transformers session that reads ``frames`` (lazy, preprocessed) and ``cache`` (image
    features) owned by the caller, so that many short-lived views share them."""
    view = Sam2VideoInferenceSession(
        video=None,
        video_height=height,
        video_width=width,
        inference_device=device,
        inference_state_device=device,
        video_storage_device="cpu",
        dtype=torch.float32,
    )
    view.processed_frames = frames
    view.cache = cache
    return view


def share_object_outputs(
    view: Sam2VideoInferenceSession,
    obj_id: int,
    outputs: dict,
    *,
    new_inputs: bool,
    tracked_frame: int | None = None,
) -> int:
    """Register object ``obj_id`` in ``view`` with ``outputs`` as its output dict (shared, so
    what transformers writes lands in the caller's dict). ``new_inputs``: the object has prompts
    to decode on this call; ``tracked_frame``: the frame counts as already tracked for it, so
    its clicks there are decoded with its memory. Returns the object's index in ``view``."""
    idx = view.obj_id_to_idx(obj_id)
    view.output_dict_per_obj[idx] = outputs
    if tracked_frame is not None:
        view.frames_tracked_per_obj[idx][tracked_frame] = {"reverse": False}
    if new_inputs:
        view.obj_with_new_inputs.append(obj_id)
    return idx


def select_closest_cond_frames(
    model: Sam2VideoModel, frame: int, cond: Mapping[int, Any]
) -> tuple[dict[int, Any], dict[int, Any]]:
    """The conditioning frames ``frame`` attends to (``max_cond_frame_num`` closest), and the
    others; transformers' ``_select_closest_cond_frames``."""
    return model._select_closest_cond_frames(
        frame, cond, max_cond_frame_num=model.config.max_cond_frame_num
    )


def process_object_pointers(
    model: Sam2VideoModel,
    offsets: list[int],
    pointers: list[torch.Tensor],
    max_pointers: int,
    num_objects: int,
    channels: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-pointer memory tokens and their temporal encodings; transformers'
    ``_process_object_pointers``."""
    return model._process_object_pointers(
        offsets, pointers, max_pointers, num_objects, channels, device
    )


def encode_new_memory(
    model: Sam2VideoModel,
    features: torch.Tensor,
    high_res_masks: torch.Tensor,
    object_scores: torch.Tensor,
    is_mask_from_pts: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory features and positions of (HW, m, C) ``features`` under (m, 1, S, S) masks;
    transformers' ``_encode_new_memory`` (sigmoid, scale and bias, occlusion embedding, bf16
    rounding of the stored features)."""
    return model._encode_new_memory(
        current_vision_feats=features,
        pred_masks_high_res=high_res_masks,
        object_score_logits=object_scores[:, None, None],
        is_mask_from_pts=is_mask_from_pts,
    )


# ---- an extra output token in the mask decoder (the division head, model/heads.py) ----------
def _append_extra_token(decoder: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: the head's token joins the prompt tokens, so the decoder's two-way
    transformer attends it to the image (and the other tokens) like SAM 2's own output tokens."""
    sparse = kwargs.get("sparse_prompt_embeddings")
    if sparse is None:
        raise RuntimeError(
            "the mask decoder was called without sparse_prompt_embeddings=...: unsupported "
            "transformers version for the division head"
        )
    batch, point_batch = sparse.shape[:2]
    token = decoder.division_head.token.weight.to(sparse.dtype)
    token = token.expand(batch, point_batch, 1, token.shape[-1])
    return args, {**kwargs, "sparse_prompt_embeddings": torch.cat([sparse, token], dim=2)}


def _keep_extra_token(transformer: Any, args: tuple, output: Any) -> None:
    """Forward hook on the decoder's two-way transformer: its last output token is ours."""
    transformer.cellsam2_extra_token = output[0][:, :, -1]


def _score_extra_token(decoder: Any, args: tuple, kwargs: dict, output: Any) -> None:
    """Forward hook on the decoder: the head's logits of this call, one per decoded object,
    from its token and the finest image features under the call's masks; plus (while a caller
    records) every output of the call."""
    token = decoder.transformer.cellsam2_extra_token
    decoder.transformer.cellsam2_extra_token = None
    masks = output[0]  # (B, point_batch, K, 4h, 4w), the finest feature level's grid
    fine = kwargs["high_resolution_features"][0].repeat_interleave(masks.shape[1], dim=0)
    logits = decoder.division_head(token.flatten(0, 1), masks.flatten(0, 1), fine).reshape(-1)
    decoder.division_logits = logits
    record = getattr(decoder, "cellsam2_record", None)
    if record is not None:
        masks, iou, _, object_score = output
        record.append((masks.detach(), iou.detach(), object_score.detach(), logits.detach()))


@contextmanager
def recorded_decodes(decoder: Any, on: bool = True) -> Iterator[list | None]:
    """While the block runs, every call of a hooked ``decoder`` appends (masks, IoUs, object
    score, division logits) to the list this yields (None and nothing recorded when ``on`` is
    False, or without a division head)."""
    record = [] if on and getattr(decoder, "cellsam2_hooked", False) else None
    decoder.cellsam2_record = record
    try:
        yield record
    finally:
        decoder.cellsam2_record = None


def install_extra_token(decoder: Any) -> None:
    """Hook ``decoder`` (a ``Sam2VideoMaskDecoder`` holding a ``division_head``) so that every
    call runs the head's token through the decoder and leaves its logits in
    ``decoder.division_logits``. The hooks find the head through the decoder they are called
    on, so a deep copy of the model carries working hooks of its own."""
    if getattr(decoder, "cellsam2_hooked", False):
        return
    decoder.register_forward_pre_hook(_append_extra_token, with_kwargs=True)
    decoder.transformer.register_forward_hook(_keep_extra_token)
    decoder.register_forward_hook(_score_extra_token, with_kwargs=True)
    decoder.cellsam2_hooked = True
