"""Bounded memory for a tracking session: an LRU of image features and a pruned memory bank.

transformers keeps every output of every frame for every object (including a full-resolution
mask per object and frame) and evicts image features by lowest frame index. For long movies we
keep only what SAM 2 can still attend to (see :func:`prune_outputs`) and evict features by
recency, so a click on a recently seen frame re-runs only the prompt encoder and mask decoder.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..model.hf_sam2 import (
    COND,
    HIGH_RES_MASKS,
    MASKMEM_FEATURES,
    MASKMEM_POS_ENC,
    NON_COND,
    POINTER_KEYS,
    PRED_MASKS,
    VISION_FEATS,
    VISION_POS,
    InferenceCache,
)


class FeatureCache(InferenceCache):
    """Least-recently-used image features of up to ``max_frames`` frames, kept on ``device``.

    The positional encodings of the feature maps depend only on their shape, so one copy is
    shared by all frames (at 1024 px they are ~6x larger than the features themselves).
    """

    def __init__(self, device: torch.device, max_frames: int) -> None:
        if max_frames < 1:
            raise ValueError(f"feature_cache_frames must be >= 1, got {max_frames}")
        super().__init__(
            inference_device=device,
            inference_state_device=device,
            max_vision_features_cache_size=max_frames,
        )
        # our own state, not the base class's: transformers only calls the methods below
        self._device, self._max_frames = device, max_frames
        self._lru: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._pos_embeds: list[torch.Tensor] | None = None

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        feats = [f.to(self._device) for f in features[VISION_FEATS]]
        if self._pos_embeds is None:
            self._pos_embeds = [p.to(self._device) for p in features[VISION_POS]]
        self._lru[frame_idx] = feats
        self._lru.move_to_end(frame_idx)
        while len(self._lru) > self._max_frames:
            self._lru.popitem(last=False)

    def get_vision_features(self, frame_idx: int) -> dict | None:
        feats = self._lru.get(frame_idx)
        if feats is None:
            return None
        self._lru.move_to_end(frame_idx)
        return {VISION_FEATS: list(feats), VISION_POS: list(self._pos_embeds or [])}

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def clear_all(self) -> None:
        self._lru.clear()
        self._pos_embeds = None


class SharedPositions:
    """One copy of the memory encoder's positional encoding per (shape, dtype, device).

    Like the image encodings it is a pure function of the feature shape, yet transformers stores
    a copy with every memory entry.
    """

    def __init__(self) -> None:
        self._known: dict[tuple, torch.Tensor] = {}

    def share(self, pos: torch.Tensor) -> torch.Tensor:
        key = (tuple(pos.shape), pos.dtype, pos.device)
        return self._known.setdefault(key, pos.clone())


def prune_outputs(
    outputs: dict,
    frame: int,
    direction: str,
    num_maskmem: int,
    max_pointers: int,
    positions: SharedPositions,
) -> None:
    """Drop what SAM 2 cannot attend to any more after tracking ``frame`` in ``direction``.

    Tracking frame t reads the memories (mask features) of the ``num_maskmem - 1`` previous
    frames and the object pointers of the ``max_pointers - 1`` previous frames (previous in the
    direction of travel), plus all conditioning (prompted) frames. Non-conditioning entries
    further back are deleted, those between the two horizons keep only their pointer, entries
    ahead of ``frame`` (a stale earlier pass) are deleted, and full-resolution masks, which are
    only needed while the memory of the frame is encoded, are dropped everywhere.
    ``direction`` "prompt" (a click preview) keeps the non-conditioning entries as they are.
    """
    for entry in outputs[COND].values():
        entry.pop(HIGH_RES_MASKS, None)
        if MASKMEM_POS_ENC in entry:
            entry[MASKMEM_POS_ENC] = positions.share(entry[MASKMEM_POS_ENC])
    non_cond = outputs[NON_COND]
    for f in list(non_cond):
        entry = non_cond[f]
        entry.pop(HIGH_RES_MASKS, None)
        entry.pop(PRED_MASKS, None)
        if MASKMEM_POS_ENC in entry:
            entry[MASKMEM_POS_ENC] = positions.share(entry[MASKMEM_POS_ENC])
        if direction == "prompt":
            continue
        behind = frame - f if direction == "forward" else f - frame
        if behind < 0 or behind >= max_pointers:
            del non_cond[f]
        elif behind >= num_maskmem:
            non_cond[f] = {k: v for k, v in entry.items() if k in POINTER_KEYS}


def drop_partial_memories(outputs: dict, frame: int, reverse: bool, num_maskmem: int) -> None:
    """Delete pointer-only entries where tracking ``frame`` would read a full memory.

    After :func:`prune_outputs`, entries far behind the propagation front keep only their
    object pointer. A step elsewhere (a correction click, a restart) may look them up as
    memories; without this they would be read as incomplete memories.
    """
    non_cond = outputs[NON_COND]
    for offset in range(1, num_maskmem):
        f = frame + offset if reverse else frame - offset
        entry = non_cond.get(f)
        if entry is not None and MASKMEM_FEATURES not in entry:
            del non_cond[f]
