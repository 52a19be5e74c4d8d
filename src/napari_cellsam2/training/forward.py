"""SAM 2 through time with autograd: the training forward of the video tracker.

transformers' ``Sam2VideoModel`` tracks only under ``torch.inference_mode`` and one object at a
time. :func:`run_clip` runs the same computation on a training clip with gradients, batched over
objects and clips, by calling the model's submodules directly:

* image features once per frame for the whole batch (``get_image_features``), indexed per object;
* on an object's conditioning frame (its ``prompt_frame``): features + ``no_memory_embedding``, then
  the prompt encoder and mask decoder on its click/box (multimask for a single click, as the
  tracker does), followed by iterative correction clicks that feed the previous logits back as a
  mask prompt; a mask prompt is used as the output directly (``_use_mask_as_output`` semantics,
  object pointer from the decoder on the downsampled mask);
* on later frames: memory attention over the object's memory bank (every conditioning frame at
  temporal slot 0, the ``num_maskmem - 1`` most recent tracked frames at their offsets, object
  pointers of the conditioning frame and the last ``max_object_pointers_in_encoder - 1`` frames
  with their sine temporal encodings), then the mask decoder (multimask for tracking, best by
  predicted IoU); masks of objects judged absent (object score <= 0) become ``NO_OBJ_SCORE`` and
  their pointer ``no_object_pointer``;
* the memory encoder on the chosen high-resolution mask (``_encode_new_memory``: sigmoid, scale
  and bias, occlusion embedding, and the same bf16 rounding of memory features as inference).

Objects are grouped by ``prompt_frame``: a group shares one memory history, so a daughter that
appears on frame 3 is neither predicted nor remembered before frame 3, and its memory starts at its
own conditioning frame. In eval mode with no corrections this reproduces transformers' inference
session (see ``tests/test_training_forward.py``); train mode gives SAM 2's training semantics
(no dynamic multimask fallback, sigmoid masks into memory, dropout). Intentional differences from
inference are documented on :func:`run_clip`.

transformers' batched helpers cannot be reused for this (``_single_frame_forward`` mis-indexes
multimask outputs and ``_prepare_memory_conditioned_features`` mis-reshapes memory attention for
batch > 1), so the decoder call and the memory bank are written here; the pure helpers for memory
selection, object-pointer encoding and memory encoding are called as they are (none is under
``no_grad``), through :mod:`napari_cellsam2.model.hf_sam2`, the one module that touches
transformers' private API; the equivalence test guards them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Sam2VideoModel

from ..model.heads import centre_head
from ..model.hf_sam2 import (
    NO_OBJ_SCORE,
    encode_new_memory,
    process_object_pointers,
    select_closest_cond_frames,
)
from .prompts import KIND_BOX, KIND_CLICK, KIND_MASK, ObjectPrompts

__all__ = [
    "NO_OBJ_SCORE",
    "ClipOutputs",
    "Corrector",
    "DecodeResult",
    "DivisionStep",
    "Divisions",
    "StepOutput",
    "decode",
    "mask_as_output",
    "run_clip",
    "unwrap_model",
]

# objects (m,), frame, predicted masks (m, S, S) bool -> (coords (m, 1, 2), labels (m, 1))
Corrector = Callable[[torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # mask prompt used as output: logits -10 / +10


def unwrap_model(model: nn.Module) -> Sam2VideoModel:
    """The ``Sam2VideoModel`` inside a peft ``PeftModel`` (adapters are injected in place)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    if not isinstance(model, Sam2VideoModel):
        raise TypeError(
            f"model must be a Sam2VideoModel (or a peft wrapper of one), got {type(model)}"
        )
    return model


@dataclass
class DecodeResult:
    """One mask-decoder pass for m objects (all tensors batched over objects)."""

    mask_logits: torch.Tensor  # (m, K, h, w) logits of every output, before no-object gating
    iou_scores: torch.Tensor  # (m, K) predicted IoU of each output
    object_score_logits: torch.Tensor  # (m,)
    low_res_masks: torch.Tensor  # (m, 1, h, w) the chosen, gated logits: what the tracker outputs
    high_res_masks: torch.Tensor  # (m, 1, S, S) the same upsampled: what the memory encoder sees
    object_pointer: torch.Tensor  # (m, C)
    division_logits: torch.Tensor | None = None  # (m,) with a division head (model.heads)


@dataclass
class StepOutput:
    """A prediction to be supervised: frame ``frame``, correction step ``step`` (0 = first)."""

    frame: int
    step: int
    objects: torch.Tensor  # (m,) indices into the clip's M objects
    mask_logits: torch.Tensor  # (m, K, h, w) raw decoder logits (K = 3 multimask or 1)
    iou_scores: torch.Tensor  # (m, K)
    object_score_logits: torch.Tensor  # (m,)
    division_logits: torch.Tensor | None = None  # (m,) with a division head

    @classmethod
    def of(cls, frame: int, step: int, objects: torch.Tensor, result: DecodeResult) -> StepOutput:
        return cls(
            frame,
            step,
            objects,
            result.mask_logits,
            result.iou_scores,
            result.object_score_logits,
            result.division_logits,
        )


@dataclass(frozen=True)
class Divisions:
    """GT divisions inside a clip, teacher-forced by :func:`run_clip`: on ``frame[d]`` the
    tracked object ``mother[d]`` divides into ``daughters[d]`` (indices into the clip's M
    objects), whose masks there are ``daughter_masks[d]`` (2, S, S) bool (used to match the
    decoder's multimask outputs 1 and 2 to the daughters)."""

    frame: torch.Tensor  # (D,) long
    mother: torch.Tensor  # (D,) long
    daughters: torch.Tensor  # (D, 2) long
    daughter_masks: torch.Tensor  # (D, 2, S, S) bool

    def __len__(self) -> int:
        return int(self.frame.shape[0])


@dataclass(frozen=True)
class DivisionStep:
    """One teacher-forced division as run: the mother's row ``row`` in ``steps[step]`` (the
    tracked decode of ``frame``), and the daughters in the order of multimask outputs 1 and 2."""

    step: int
    frame: int
    mother: int
    row: int
    daughters: tuple[int, int]


@dataclass
class ClipOutputs:
    """Everything :func:`run_clip` predicted on a clip of T frames for M objects."""

    steps: list[StepOutput]  # decoder predictions (mask prompts used as output are not listed)
    pred_masks: torch.Tensor  # (M, T, h, w) final low-res logits per frame, as the tracker outputs
    object_score_logits: torch.Tensor  # (M, T)
    tracked: torch.Tensor  # (M, T) bool: frame >= the object's prompt frame
    divisions: list[DivisionStep] = field(default_factory=list)
    # frame -> (B, S/4, S/4) cell-centre heatmap logits, with a heatmap head (model.heads)
    centre_logits: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Memory:
    features: torch.Tensor  # (HW, m, mem_dim), bf16 as inference stores it
    position: torch.Tensor  # (HW, m, mem_dim)
    pointer: torch.Tensor  # (m, C)

    def columns(self, index: torch.Tensor) -> _Memory:
        """The memory of the objects at ``index`` (positions in the group)."""
        return _Memory(self.features[:, index], self.position[:, index], self.pointer[index])


@dataclass
class _Group:
    """Objects sharing a conditioning frame, hence one memory history."""

    start: int
    objects: torch.Tensor  # (m,) indices into M
    cond: dict[int, _Memory] = field(default_factory=dict)
    non_cond: dict[int, _Memory] = field(default_factory=dict)

    def subset(self, index: torch.Tensor, start: int | None = None) -> _Group:
        """The objects at ``index`` (positions in this group) with their memory: daughters
        inherit their mother's bank this way, and a group drops its divided mothers."""
        return _Group(
            self.start if start is None else start,
            self.objects[index],
            {f: mem.columns(index) for f, mem in self.cond.items()},
            {f: mem.columns(index) for f, mem in self.non_cond.items()},
        )


def _use_multimask(model: Sam2VideoModel, init_cond: bool, num_points: int) -> bool:
    """Same rule as ``Sam2VideoModel._use_multimask``: 3 outputs for 0-1 points (ambiguous)."""
    cfg = model.config
    return bool(
        cfg.multimask_output_in_sam
        and (init_cond or cfg.multimask_output_for_tracking)
        and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num
    )


def decode(
    model: Sam2VideoModel,
    image_embeddings: list[torch.Tensor],
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    mask_input: torch.Tensor | None,
    multimask: bool,
) -> DecodeResult:
    """Prompt encoder + mask decoder for m objects, as ``_single_frame_forward`` does for one.

    ``image_embeddings``: [level-0 (m, C/8, 4h, 4w), level-1 (m, C/4, 2h, 2w), (m, C, h, w)] with
    the last one memory-conditioned. ``point_coords`` (m, P, 2) / ``point_labels`` (m, P) or None
    (then a single "not a point", as transformers pads); ``mask_input`` (m, 1, h', w') logits.
    """
    low = image_embeddings[-1]
    m = low.shape[0]
    positional = model.get_image_wide_positional_embeddings().repeat(m, 1, 1, 1)
    if point_coords is None:
        coords = low.new_zeros((m, 1, 1, 2))
        labels = -torch.ones((m, 1, 1), dtype=torch.int32, device=low.device)
    else:
        # float32 even under autocast: bf16 would round canvas coordinates by up to 4 pixels
        coords, labels = point_coords[:, None].float(), point_labels[:, None]
    if mask_input is not None and mask_input.shape[-2:] != model.prompt_encoder.mask_input_size:
        mask_input = _resize(mask_input, model.prompt_encoder.mask_input_size, antialias=True)
    sparse, dense = model.prompt_encoder(
        input_points=coords, input_labels=labels, input_boxes=None, input_masks=mask_input
    )
    multi, iou, tokens, obj = model.mask_decoder(
        image_embeddings=low,
        image_positional_embeddings=positional,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        high_resolution_features=image_embeddings[:-1],
    )
    multi, iou, tokens, obj = multi[:, 0], iou[:, 0], tokens[:, 0], obj.reshape(m)
    appearing = obj > 0
    gated = torch.where(appearing[:, None, None, None], multi, NO_OBJ_SCORE)
    rows = torch.arange(m, device=low.device)
    if multimask:
        best = iou.argmax(-1)
        chosen, token = gated[rows, best][:, None], tokens[rows, best]
    else:
        # transformers takes token 0 even when its dynamic-stability fallback swapped the mask
        chosen, token = gated[:, :1], tokens[:, 0]
    high = _resize(chosen, (model.image_size, model.image_size))
    pointer = model.object_pointer_proj(token)
    lam = appearing.to(pointer.dtype)[:, None]
    pointer = lam * pointer + (1 - lam) * model.no_object_pointer
    division = getattr(model.mask_decoder, "division_logits", None) if _has_head(model) else None
    return DecodeResult(multi, iou, obj, chosen, high, pointer, division)


def _has_head(model: Sam2VideoModel) -> bool:
    return getattr(model.mask_decoder, "division_head", None) is not None


def _resize(x: torch.Tensor, size, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize computed in float32 (also under autocast), back in ``x``'s dtype."""
    out = F.interpolate(
        x.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return out.to(x.dtype)


def mask_as_output(
    model: Sam2VideoModel,
    image_embeddings: list[torch.Tensor],
    masks: torch.Tensor,
) -> DecodeResult:
    """A mask prompt (m, S, S) becomes the output (logits -10/+10), as ``_use_mask_as_output``.

    The object pointer comes from the decoder prompted with the mask downsampled by
    ``mask_downsample`` on the *unconditioned* features (no no-memory embedding), and the object
    score is +10 / -10 by whether the mask is empty, exactly as in transformers.
    """
    raw = image_embeddings[-1]
    m = raw.shape[0]
    size = (model.image_size, model.image_size)
    mask = masks[:, None].to(raw.dtype)
    if mask.shape[-2:] != size:
        mask = _resize(mask, size, antialias=True)
    high = mask * MASK_OUT_SCALE + MASK_OUT_BIAS
    low = _resize(high, model.prompt_encoder.mask_input_size, antialias=True)
    pointer = decode(
        model, image_embeddings, None, None, model.mask_downsample(mask), multimask=True
    ).object_pointer
    lam = mask.flatten(1).gt(0).any(1).to(raw.dtype)[:, None]
    pointer = lam * pointer + (1 - lam) * model.no_object_pointer
    obj = (MASK_OUT_SCALE * lam + MASK_OUT_BIAS).reshape(m)
    return DecodeResult(low, raw.new_ones((m, 1)), obj, low, high, pointer)


def _memory_conditioned(
    model: Sam2VideoModel,
    group: _Group,
    frame: int,
    features: torch.Tensor,
    position: torch.Tensor,
    pointer_horizon: int,
) -> torch.Tensor:
    """Memory attention of the current features (HW, m, C) over the group's bank -> (m, C, h, w).

    Same selection as ``_gather_memory_frame_outputs`` / ``_get_object_pointers`` (forward time).
    """
    hw, m, channels = features.shape
    h, w = model.backbone_feature_sizes[-1]
    if model.num_maskmem == 0:
        return features.permute(1, 2, 0).reshape(m, channels, h, w)
    selected, unselected = select_closest_cond_frames(model, frame, group.cond)
    entries = [(0, mem) for mem in selected.values()]
    for offset in range(model.num_maskmem - 1, 0, -1):
        previous = frame - offset
        entries.append((offset, group.non_cond.get(previous, unselected.get(previous))))
    memories, positions = [], []
    for offset, mem in entries:
        if mem is None:
            continue
        memories.append(mem.features)
        positions.append(mem.position + model.memory_temporal_positional_encoding[offset - 1])

    max_pointers = min(pointer_horizon, model.config.max_object_pointers_in_encoder)
    offsets, pointers = [], []
    for cond_frame, mem in group.cond.items():
        if cond_frame <= frame:
            offsets.append(frame - cond_frame)
            pointers.append(mem.pointer)
    for delta in range(1, max_pointers):
        if frame - delta < 0:
            break
        mem = group.non_cond.get(frame - delta)
        if mem is not None:
            offsets.append(delta)
            pointers.append(mem.pointer)
    num_pointer_tokens = 0
    if pointers:
        obj_ptrs, obj_pos = process_object_pointers(
            model, offsets, pointers, max_pointers, m, channels, features.device
        )
        memories.append(obj_ptrs)
        positions.append(obj_pos)
        num_pointer_tokens = obj_ptrs.shape[0]

    out = model.memory_attention(
        current_vision_features=features,
        current_vision_position_embeddings=position,
        memory=torch.cat(memories, dim=0).to(features.dtype),
        memory_posision_embeddings=torch.cat(positions, dim=0),
        num_object_pointer_tokens=num_pointer_tokens,
    )
    if tuple(out.shape) != (1, m, hw, channels):
        raise RuntimeError(
            f"memory attention returned shape {tuple(out.shape)}, expected {(1, m, hw, channels)}: "
            "unsupported transformers version"
        )
    return out[0].transpose(1, 2).reshape(m, channels, h, w)


def _prompted(
    model: Sam2VideoModel,
    objects: torch.Tensor,
    frame: int,
    raw: torch.Tensor,
    high_res: list[torch.Tensor],
    prompts: ObjectPrompts,
    corrector: Corrector | None,
    num_corrections: int,
    steps: list[StepOutput],
) -> DecodeResult:
    """Conditioning frame of a group: first prompt, then correction clicks (clicks and boxes)."""
    m, channels = objects.shape[0], raw.shape[2]
    h, w = model.backbone_feature_sizes[-1]
    raw_map = raw.permute(1, 2, 0).reshape(m, channels, h, w)
    cond_map = (raw + model.no_memory_embedding).permute(1, 2, 0).reshape(m, channels, h, w)
    parts: list[tuple[torch.Tensor, DecodeResult]] = []
    for kind in (KIND_MASK, KIND_CLICK, KIND_BOX):
        sub = (prompts.kind[objects] == kind).nonzero().flatten()
        if sub.numel() == 0:
            continue
        ids = objects[sub]
        feats = [f[sub] for f in high_res]
        if kind == KIND_MASK:
            parts.append((sub, mask_as_output(model, [*feats, raw_map[sub]], prompts.masks[ids])))
            continue
        n = ObjectPrompts.num_points(kind)
        coords, labels = prompts.point_coords[ids, :n], prompts.point_labels[ids, :n]
        embeddings = [*feats, cond_map[sub]]
        result = decode(model, embeddings, coords, labels, None, _use_multimask(model, True, n))
        steps.append(StepOutput.of(frame, 0, ids, result))
        result = _correct(
            model,
            ids,
            frame,
            embeddings,
            coords,
            labels,
            result,
            True,
            corrector,
            num_corrections,
            steps,
        )
        parts.append((sub, result))
    return _merge(parts)


def _correct(
    model: Sam2VideoModel,
    objects: torch.Tensor,
    frame: int,
    embeddings: list[torch.Tensor],
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    result: DecodeResult,
    init_cond: bool,
    corrector: Corrector | None,
    num_corrections: int,
    steps: list[StepOutput],
) -> DecodeResult:
    """Iterative correction clicks on one frame, decoded exactly as the tracking session decodes
    a user's clicks there: every click so far on that frame, no mask prompt (transformers'
    session passes no previous logits), the same features (with the no-memory embedding on an
    initial conditioning frame, memory-conditioned on a tracked frame) and the same multimask
    rule. Each click is sampled from the errors of the previous decode."""
    for step in range(1, num_corrections + 1):
        assert corrector is not None  # checked by run_clip
        new_xy, new_labels = corrector(objects, frame, result.high_res_masks[:, 0] > 0)
        new_xy = new_xy.to(embeddings[-1].device, torch.float32)
        new_labels = new_labels.to(embeddings[-1].device, torch.int32)
        coords = new_xy if coords is None else torch.cat([coords, new_xy.to(coords)], dim=1)
        labels = new_labels if labels is None else torch.cat([labels, new_labels], dim=1)
        multimask = _use_multimask(model, init_cond, coords.shape[1])
        result = decode(model, embeddings, coords, labels, None, multimask)
        steps.append(StepOutput.of(frame, step, objects, result))
    return result


def _merge(parts: list[tuple[torch.Tensor, DecodeResult]]) -> DecodeResult:
    """Reassemble per-kind results into the group's object order (mask_logits/iou not needed)."""
    order = torch.cat([sub for sub, _ in parts])
    inverse = torch.argsort(order)

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(r, name) for _, r in parts])[inverse]

    low, high = cat("low_res_masks"), cat("high_res_masks")
    return DecodeResult(
        low,
        low.new_ones((low.shape[0], 1)),
        cat("object_score_logits"),
        low,
        high,
        cat("object_pointer"),
    )


def run_clip(
    model: nn.Module,
    pixel_values: torch.Tensor,
    batch_index: torch.Tensor,
    prompt_frame: torch.Tensor,
    prompts: ObjectPrompts,
    corrector: Corrector | None = None,
    num_corrections: int | None = None,
    pointer_horizon: int | None = None,
    correct_frames: Sequence[int] = (),
    correct_as_cond: bool = True,
    memory_masks: torch.Tensor | None = None,
    divisions: Divisions | None = None,
) -> ClipOutputs:
    """Track M prompted objects through a clip with autograd; returns every prediction.

    Args:
        model: ``Sam2VideoModel`` (or a peft wrapper); its train/eval mode is respected.
        pixel_values: (T, 3, S, S) or (B, T, 3, S, S) frames preprocessed as for inference.
        batch_index: (M,) long, which clip of the batch each object belongs to.
        prompt_frame: (M,) long, the object's conditioning frame; it is not tracked before it.
        prompts: the first prompt of each object on its prompt frame.
        corrector: gives correction clicks on conditioning frames for click/box prompts.
        num_corrections: correction steps (default ``corrector.num_steps``, 0 without corrector).
        pointer_horizon: object pointers' temporal-encoding range. The tracker's non-streaming
            session uses ``min(num_frames, max_object_pointers_in_encoder)``; the default ``None``
            uses ``max_object_pointers_in_encoder``, i.e. what inference uses on any video of at
            least that many frames, so short training clips are encoded like long videos. Pass the
            number of frames to reproduce a session holding exactly this clip.
        correct_frames: tracked frames that also get ``num_corrections`` correction clicks, as
            SAM 2's trainer does (``num_frames_to_correct``): the tracked prediction (step 0)
            followed by clicks decoded on the memory-conditioned features, as the session does
            when a user clicks on a frame that has memory. Applies to every group whose prompt
            frame lies before it (a group's own prompt frame is always corrected).
        correct_as_cond: a corrected tracked frame becomes a conditioning frame (its memory sits
            at temporal slot 0 and is always attended), as the session does after a click there
            and SAM 2's ``add_all_frames_to_correct_as_cond``.
        memory_masks: (M, T, S, S) target masks written into memory instead of the predictions
            (teacher forcing, a training curriculum: a model trained from random weights whose
            masks still cover every cell would otherwise remember no identity and never learn
            to track). Inference never does this.
        divisions: GT divisions, teacher-forced (needs a model with a division head,
            :mod:`napari_cellsam2.model.heads`, and multimask tracking): on a division frame
            the mother's tracked decode is the division. Its multimask outputs 1 and 2 are
            matched to the two daughters at minimum cost (``20 focal + dice``, as the loss);
            each daughter then starts from the mother's memory bank (conditioning frames,
            recent frames and object pointers), with its matched output, binarised, as a mask
            prompt on the division frame, exactly what the tracking session does at a learned
            division. The mother stops there: she is neither decoded nor supervised later.
            Daughters are not prompted from ``prompts``; their ``prompt_frame`` must be the
            division frame.

    Differences from inference, on purpose: objects (and clips) are batched; the memory encoder
    is not run on the clip's last frame (nothing reads it); correction clicks are simulated.
    ``is_mask_from_pts`` (eval mode only: binarised masks into memory) is per object, as in Meta's
    SAM 2; transformers' batched memory encoding sets it for every object of a frame on which any
    object received a prompt, which differs only on frames where objects are prompted while
    others are tracked.
    """
    model = unwrap_model(model)
    if pixel_values.ndim == 4:
        pixel_values = pixel_values[None]
    if pixel_values.ndim != 5 or pixel_values.shape[2] != 3:
        raise ValueError(
            f"pixel_values must be (T, 3, S, S) or (B, T, 3, S, S), got {tuple(pixel_values.shape)}"
        )
    num_clips, num_frames = pixel_values.shape[:2]
    num_objects = int(batch_index.shape[0])
    if prompt_frame.shape != (num_objects,) or len(prompts) != num_objects:
        raise ValueError(
            f"batch_index {tuple(batch_index.shape)}, prompt_frame {tuple(prompt_frame.shape)} "
            f"and prompts ({len(prompts)}) must describe the same M objects"
        )
    if num_objects and (int(batch_index.min()) < 0 or int(batch_index.max()) >= num_clips):
        raise ValueError(f"batch_index must be in [0, {num_clips}), got {batch_index.tolist()}")
    if num_objects and (int(prompt_frame.min()) < 0 or int(prompt_frame.max()) >= num_frames):
        raise ValueError(f"prompt_frame must be in [0, {num_frames}), got {prompt_frame.tolist()}")
    if num_corrections is None:
        num_corrections = getattr(corrector, "num_steps", 0) if corrector is not None else 0
    if num_corrections > 0 and corrector is None:
        raise ValueError("num_corrections > 0 needs a corrector")
    horizon = pointer_horizon or model.config.max_object_pointers_in_encoder
    corrected = {int(f) for f in correct_frames}
    if corrected and not all(0 <= f < num_frames for f in corrected):
        raise ValueError(f"correct_frames must be in [0, {num_frames}), got {sorted(corrected)}")

    device = pixel_values.device
    # objects' clips and prompt frames steer the loop: read them on the host once
    starts = prompt_frame.cpu()
    batch_index, prompt_frame = batch_index.to(device), prompt_frame.to(device)
    by_frame = _check_divisions(divisions, model, starts, num_frames)
    groups = _groups(prompt_frame, starts, divisions if by_frame else None)
    division_steps: list[DivisionStep] = []
    centre = centre_head(model)
    centre_logits: dict[int, torch.Tensor] = {}
    sizes = model.backbone_feature_sizes
    h, w = model.prompt_encoder.mask_input_size
    steps: list[StepOutput] = []
    frame_masks: list[torch.Tensor] = []
    frame_scores: list[torch.Tensor] = []
    for frame in range(num_frames):
        active = [g for g in groups if g.start <= frame]
        masks = pixel_values.new_full((num_objects, h, w), NO_OBJ_SCORE)
        scores = pixel_values.new_full((num_objects,), NO_OBJ_SCORE)
        if not active:
            frame_masks.append(masks)
            frame_scores.append(scores)
            continue
        vision = model.get_image_features(pixel_values[:, frame], return_dict=True)
        feats, pos = vision.fpn_hidden_states, vision.fpn_position_encoding
        if centre is not None:
            centre_logits[frame] = centre(list(feats), sizes)

        results: dict[int, DecodeResult] = {}
        tracked_step = -1  # index in steps of this frame's tracked decode
        tracked = [g for g in active if g.start != frame]
        for group in active:
            if group.start != frame:
                continue
            low, _, high_res = _object_features(feats, pos, sizes, batch_index[group.objects])
            results[id(group)] = _prompted(
                model,
                group.objects,
                frame,
                low,
                high_res,
                prompts,
                corrector,
                num_corrections,
                steps,
            )
        if tracked:
            # every tracked group in one decoder pass: memory attention is per group (each has
            # its own bank), the decoder is per object
            conditioned, high_res_parts = [], []
            for group in tracked:
                low, low_pos, high_res = _object_features(
                    feats, pos, sizes, batch_index[group.objects]
                )
                conditioned.append(_memory_conditioned(model, group, frame, low, low_pos, horizon))
                high_res_parts.append(high_res)
            embeddings = [torch.cat(level) for level in zip(*high_res_parts, strict=True)]
            embeddings.append(torch.cat(conditioned))
            objects = torch.cat([g.objects for g in tracked])
            result = decode(model, embeddings, None, None, None, _use_multimask(model, False, 0))
            tracked_step = len(steps)
            steps.append(StepOutput.of(frame, 0, objects, result))
            if frame in corrected:
                result = _correct(
                    model,
                    objects,
                    frame,
                    embeddings,
                    None,
                    None,
                    result,
                    False,
                    corrector,
                    num_corrections,
                    steps,
                )
            sizes_of = [g.objects.shape[0] for g in tracked]
            for group, part in zip(tracked, _split(result, sizes_of), strict=True):
                results[id(group)] = part
        ordered = [results[id(g)] for g in active]
        for d in by_frame.get(frame, []):
            division_steps.append(
                _divide(
                    model,
                    divisions,
                    d,
                    groups,
                    active,
                    ordered,
                    steps,
                    tracked_step,
                    feats,
                    pos,
                    sizes,
                    batch_index,
                )
            )
        for group, result in zip(active, ordered, strict=True):
            masks = masks.index_put((group.objects,), result.low_res_masks[:, 0].to(masks.dtype))
            scores = scores.index_put((group.objects,), result.object_score_logits.to(scores.dtype))
        frame_masks.append(masks)
        frame_scores.append(scores)
        if frame < num_frames - 1 and model.num_maskmem > 0:
            prompted = [
                g.start == frame or (frame in corrected and num_corrections > 0) for g in active
            ]
            as_cond = [
                g.start == frame or (p and correct_as_cond)
                for g, p in zip(active, prompted, strict=True)
            ]
            if memory_masks is not None:
                ordered = [
                    _teacher(r, memory_masks[g.objects, frame])
                    for g, r in zip(active, ordered, strict=True)
                ]
            _remember(model, active, ordered, feats[-1], batch_index, frame, prompted, as_cond)
    tracked = prompt_frame[:, None] <= torch.arange(num_frames, device=device)[None]
    return ClipOutputs(
        steps=steps,
        pred_masks=torch.stack(frame_masks, dim=1),
        object_score_logits=torch.stack(frame_scores, dim=1),
        tracked=tracked,
        divisions=division_steps,
        centre_logits=centre_logits,
    )


def _groups(
    prompt_frame: torch.Tensor, starts: torch.Tensor, divisions: Divisions | None
) -> list[_Group]:
    """Objects grouped by prompt frame; daughters of ``divisions`` are left out (they join the
    tracking when their mother divides)."""
    if divisions is None:
        return [
            _Group(start, (prompt_frame == start).nonzero().flatten())
            for start in torch.unique(starts).tolist()
        ]
    inherited = torch.zeros(starts.shape[0], dtype=torch.bool)
    inherited[divisions.daughters.flatten().cpu()] = True
    own = ~inherited.to(prompt_frame.device)
    return [
        _Group(start, ((prompt_frame == start) & own).nonzero().flatten())
        for start in torch.unique(starts[~inherited]).tolist()
    ]


def _check_divisions(
    divisions: Divisions | None, model: Sam2VideoModel, starts: torch.Tensor, num_frames: int
) -> dict[int, list[int]]:
    """Division indices by frame, after checking that each one can be teacher-forced."""
    if divisions is None or not len(divisions):
        return {}
    if not _has_head(model):
        raise ValueError("divisions need a model with a division head (model.heads)")
    if not _use_multimask(model, False, 0):
        raise ValueError("divisions need multimask tracking (multimask_output_for_tracking)")
    by_frame: dict[int, list[int]] = {}
    frames, mothers = divisions.frame.tolist(), divisions.mother.tolist()
    for d, (frame, mother, pair) in enumerate(
        zip(frames, mothers, divisions.daughters.tolist(), strict=True)
    ):
        if not 0 < frame < num_frames or int(starts[mother]) >= frame:
            raise ValueError(
                f"division {d}: mother {mother} (prompt frame {int(starts[mother])}) cannot "
                f"divide on frame {frame} of {num_frames}"
            )
        if [int(starts[i]) for i in pair] != [frame, frame] or mother in pair:
            raise ValueError(f"division {d}: daughters {pair} must start on frame {frame}")
        by_frame.setdefault(frame, []).append(d)
    return by_frame


def _divide(
    model: Sam2VideoModel,
    divisions: Divisions,
    d: int,
    groups: list[_Group],
    active: list[_Group],
    ordered: list[DecodeResult],
    steps: list[StepOutput],
    tracked_step: int,
    feats: list[torch.Tensor],
    pos: list[torch.Tensor],
    sizes: list[tuple[int, int]],
    batch_index: torch.Tensor,
) -> DivisionStep:
    """Teacher-force division ``d`` (see :func:`run_clip`): the daughters' group joins
    ``groups``/``active``/``ordered`` and the mother leaves hers (all three edited in place)."""
    frame, mother = int(divisions.frame[d]), int(divisions.mother[d])
    step = steps[tracked_step]
    row = int((step.objects == mother).nonzero()[0, 0])
    with torch.no_grad():  # outputs 1, 2 on the canvas, where the targets live: (2, 1, S, S)
        up = _resize(step.mask_logits[row, 1:3, None].float(), (model.image_size,) * 2)
        cost = _match_cost(up, divisions.daughter_masks[d])  # (2 outputs, 2 daughters)
    swap = bool(cost[0, 1] + cost[1, 0] < cost[0, 0] + cost[1, 1])
    pair = divisions.daughters[d].flip(0) if swap else divisions.daughters[d]
    daughters = pair.to(step.objects.device)
    masks = up[:, 0] > 0
    low, _, high_res = _object_features(feats, pos, sizes, batch_index[daughters])
    raw_map = low.permute(1, 2, 0).reshape(2, low.shape[2], *model.backbone_feature_sizes[-1])
    result = mask_as_output(model, [*high_res, raw_map], masks)

    g = next(i for i, grp in enumerate(active) if bool((grp.objects == mother).any()))
    group = active[g]
    position = (group.objects == mother).nonzero().flatten()
    child = group.subset(position.repeat(2), start=frame)
    child.objects = daughters
    keep = (group.objects != mother).nonzero().flatten()
    remaining = group.subset(keep)
    groups[groups.index(group)] = remaining
    active[g], ordered[g] = remaining, _rows(ordered[g], keep)
    if keep.numel() == 0:
        groups.remove(remaining)
        del active[g], ordered[g]
    groups.append(child)
    active.append(child)
    ordered.append(result)
    return DivisionStep(tracked_step, frame, mother, row, (int(pair[0]), int(pair[1])))


def _match_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``20 focal + dice`` of each of 2 outputs (2, 1, S, S) against each of 2 targets."""
    from .losses import dice_loss, focal_loss  # losses imports this module

    targets = targets[None].float()  # (1, 2, S, S)
    return 20.0 * focal_loss(logits, targets) + dice_loss(logits, targets)


def _rows(result: DecodeResult, index: torch.Tensor) -> DecodeResult:
    """The decoder result of the objects at ``index``."""
    return DecodeResult(
        *(
            None if getattr(result, f.name) is None else getattr(result, f.name)[index]
            for f in dataclass_fields(result)
        )
    )


def _object_features(
    feats: list[torch.Tensor],
    pos: list[torch.Tensor],
    sizes: list[tuple[int, int]],
    clips: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Per-object views of a frame's features: the low-resolution level (HW, m, C) with its
    positions, and the high-resolution levels as (m, C_l, H_l, W_l) maps."""
    high_res = [
        f[:, clips].permute(1, 2, 0).reshape(len(clips), f.shape[2], *size)
        for f, size in zip(feats[:-1], sizes[:-1], strict=True)
    ]
    return feats[-1][:, clips], pos[-1][:, clips], high_res


def _split(result: DecodeResult, sizes: list[int]) -> list[DecodeResult]:
    """A batched decoder result cut back into consecutive object groups of ``sizes``."""
    none = [None] * len(sizes)
    fields = [
        none if getattr(result, f.name) is None else torch.split(getattr(result, f.name), sizes)
        for f in dataclass_fields(result)
    ]
    return [DecodeResult(*parts) for parts in zip(*fields, strict=True)]


def _teacher(result: DecodeResult, masks: torch.Tensor) -> DecodeResult:
    """``result`` with the target masks (m, S, S) as the high-resolution mask the memory
    encoder sees (logits -10 / +10, as a mask prompt) and a confident object score where the
    target is present; the object pointer stays the decoder's."""
    present = masks.flatten(1).any(1)
    high = masks[:, None].to(result.high_res_masks.dtype) * MASK_OUT_SCALE + MASK_OUT_BIAS
    score = torch.where(present, MASK_OUT_SCALE + MASK_OUT_BIAS, MASK_OUT_BIAS)
    return replace(
        result, high_res_masks=high, object_score_logits=score.to(result.object_score_logits)
    )


def _remember(
    model: Sam2VideoModel,
    active: list[_Group],
    results: list[DecodeResult],
    features: torch.Tensor,
    batch_index: torch.Tensor,
    frame: int,
    prompted: list[bool],
    as_cond: list[bool],
) -> None:
    """Encode this frame's chosen masks into each group's memory (batched memory-encoder calls).

    Groups whose masks came from prompts on this frame (their prompt frame, or a corrected
    tracked frame) and tracked groups are encoded in separate calls because
    ``is_mask_from_pts`` (binarised masks in eval mode) is per object, as in Meta's SAM 2; each
    group's memory goes to its conditioning or its tracked bank by ``as_cond``.
    """
    entries = list(zip(active, results, prompted, as_cond, strict=True))
    for from_prompt in (True, False):
        chosen = [(g, r, c) for g, r, p, c in entries if p == from_prompt]
        if not chosen:
            continue
        objects = torch.cat([g.objects for g, _, _ in chosen])
        maskmem, maskmem_pos = encode_new_memory(
            model,
            features[:, batch_index[objects]],
            torch.cat([r.high_res_masks for _, r, _ in chosen]),
            torch.cat([r.object_score_logits for _, r, _ in chosen]),
            is_mask_from_pts=from_prompt,
        )
        offset = 0
        for group, result, cond in chosen:
            n = group.objects.shape[0]
            memory = _Memory(
                maskmem[:, offset : offset + n],
                maskmem_pos[:, offset : offset + n],
                result.object_pointer,
            )
            (group.cond if cond else group.non_cond)[frame] = memory
            offset += n
