"""The training objective: one :class:`ClipBatch` -> SAM 2 loss, the only call the loop makes.

``clip_loss`` flattens the valid objects of all clips of the batch (padding slots are dropped),
samples their first prompts on their prompt frames (click / box / mask; background objects: a
click in empty space), runs SAM 2 through time with correction clicks on the prompt frame and on
0-1 random tracked frames (:func:`run_clip`, :func:`.prompts.frames_to_correct`) and sums SAM 2's
losses (:mod:`.losses`). The model's train/eval mode is left as the caller set it: the loop
should call ``model.train()`` for SAM 2's training semantics (see :mod:`.forward`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.heads import division_head
from .centres import centre_focal_loss
from .config import ScratchConfig
from .data import ClipBatch
from .forward import Divisions, run_clip
from .losses import LossWeights, clip_losses
from .prompts import ClickCorrector, frames_to_correct, sample_prompts

__all__ = ["clip_loss", "gt_divisions"]


def clip_loss(
    model: nn.Module,
    batch: ClipBatch,
    scratch: ScratchConfig,
    generator: torch.Generator | None = None,
    weights: LossWeights | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss (with grad) of one batch and its parts ``focal, dice, iou, obj, total`` (and
    ``div`` / ``heatmap`` with CellSAM2's heads, each weighted by its ``scratch.loss_*``).

    Objects are normalised by their count over the whole batch (valid slots, including background
    objects), as SAM 2 does; B > 1 clips are tracked together, batched over all their objects.
    """
    num_clips, num_frames = batch.targets.shape[:2]
    if batch.pixel_values.shape[:2] != (num_clips, num_frames):
        raise ValueError(
            f"batch.pixel_values {tuple(batch.pixel_values.shape)} and batch.targets "
            f"{tuple(batch.targets.shape)} disagree on (B, T)"
        )
    clip_idx, slot = batch.obj_valid.nonzero(as_tuple=True)
    has_head = division_head(model) is not None
    if clip_idx.numel() == 0:
        raise ValueError("batch has no valid objects (obj_valid is all False)")
    prompt_frame = batch.prompt_frame[clip_idx, slot]
    if int(prompt_frame.max()) >= num_frames or int(prompt_frame.min()) < 0:
        raise ValueError(
            f"batch.prompt_frame must be in [0, {num_frames}), got {prompt_frame.tolist()}"
        )
    is_background = batch.is_background[clip_idx, slot]
    targets = batch.targets[clip_idx, :, slot] > 0.5  # (M, T, S, S)
    rows = torch.arange(targets.shape[0], device=targets.device)
    first = targets[rows, prompt_frame]
    # background objects are prompted on frame 0, outside every cell there (chosen or not)
    occupied = batch.targets.amax(2) > 0.5  # (B, T, S, S): some chosen cell covers the pixel
    occupied = occupied[clip_idx, prompt_frame] | batch.foreground[clip_idx]
    empty_space = batch.valid_region[clip_idx] & ~occupied

    prompts, ok = sample_prompts(
        first,
        is_background,
        empty_space,
        scratch.prob_point,
        scratch.prob_box,
        scratch.prob_mask,
        generator,
        batch.valid_region[clip_idx],
    )
    if not bool(ok.all()):  # background objects without empty space to click: drop them
        keep = ok.nonzero().flatten()
        clip_idx, prompt_frame, targets = clip_idx[keep], prompt_frame[keep], targets[keep]
        slot = slot[keep]
        prompts = prompts.subset(keep)
        if keep.numel() == 0:
            raise ValueError("no object of the batch could be prompted")
    corrector = ClickCorrector(
        targets,
        batch.valid_region[clip_idx],
        scratch.num_correction_pt_per_frame,
        scratch.prob_correction_from_gt,
        generator,
    )
    tracked = frames_to_correct(
        int(prompt_frame.min()),
        num_frames,
        scratch.num_frames_to_correct if scratch.num_correction_pt_per_frame else 1,
        scratch.rand_frames_to_correct,
        generator,
    )
    divisions = gt_divisions(batch, clip_idx, slot, prompt_frame, targets) if has_head else None
    if divisions is not None:  # a division frame is the mother's decode, not a correction
        tracked = [f for f in tracked if f not in set(divisions.frame.tolist())]
    outputs = run_clip(
        model,
        batch.pixel_values,
        clip_idx,
        prompt_frame,
        prompts,
        corrector,
        correct_frames=tracked,
        correct_as_cond=scratch.add_all_frames_to_correct_as_cond,
        memory_masks=targets if scratch.memory_from_gt else None,
        divisions=divisions,
    )
    if weights is None:
        weights = LossWeights(
            focal=scratch.loss_mask,
            dice=scratch.loss_dice,
            iou=scratch.loss_iou,
            obj=scratch.loss_class,
            div=scratch.loss_div,
            div_pos_weight=scratch.div_pos_weight,
        )
    total, parts = clip_losses(
        outputs.steps,
        targets,
        num_objects=int(clip_idx.numel()),
        weights=weights,
        supervise_all_iou=scratch.supervise_all_iou,
        divisions=outputs.divisions,
    )
    if outputs.centre_logits:
        frames = sorted(outputs.centre_logits)
        logits = torch.stack([outputs.centre_logits[f] for f in frames], dim=1)
        heat = centre_focal_loss(logits.flatten(0, 1), batch.centres[:, frames].flatten(0, 1))
        heat = heat.mean()
        total = total + scratch.loss_heatmap * heat
        parts["heatmap"] = float(heat.detach())
        parts["total"] = float(total.detach())
    return total, parts


def gt_divisions(
    batch: ClipBatch,
    clip_idx: torch.Tensor,
    slot: torch.Tensor,
    prompt_frame: torch.Tensor,
    targets: torch.Tensor,
) -> Divisions | None:
    """The batch's divisions that can be teacher-forced, as indices into the flattened objects
    (``clip_idx``, ``slot``): a mother tracked up to the frame before her two daughters appear
    together. Others (a daughter not visible at the model resolution, a mother prompted on the
    division frame) stay as the data has them: daughters prompted, the mother absent."""
    index = {key: i for i, key in enumerate(zip(clip_idx.tolist(), slot.tolist(), strict=True))}
    parents = batch.parent_slot[clip_idx, slot].tolist()
    starts = prompt_frame.tolist()
    children: dict[int, list[int]] = {}
    for i, (clip, parent) in enumerate(zip(clip_idx.tolist(), parents, strict=True)):
        if parent >= 0 and (clip, parent) in index:
            children.setdefault(index[(clip, parent)], []).append(i)
    found = []
    for mother, pair in sorted(children.items()):
        frame = starts[pair[0]] if len(pair) == 2 else -1
        if frame < 1 or starts[pair[1]] != frame or starts[mother] >= frame:
            continue
        if bool(targets[mother, frame - 1].any()):
            found.append((frame, mother, pair))
    if not found:
        return None
    device = targets.device
    frames = torch.tensor([f for f, _, _ in found], device=device)
    pairs = torch.tensor([p for _, _, p in found], device=device)
    return Divisions(
        frame=frames,
        mother=torch.tensor([m for _, m, _ in found], device=device),
        daughters=pairs,
        daughter_masks=targets[pairs, frames[:, None]],
    )
