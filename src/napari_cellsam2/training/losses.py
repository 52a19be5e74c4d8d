"""SAM 2's training losses: focal + dice + IoU-prediction + object-score, per step and object.

Resolution. Mask terms are computed at the model canvas resolution S: the decoder's low-res logits
(S/4) are upsampled bilinearly to S (as SAM 2 does, and as the tracker does before thresholding),
and compared with the S x S targets, so thin cells and boundaries are supervised at full detail.
To bound memory, every output is upsampled without gradient (to choose the supervised one and to
measure each output's actual IoU) and only the chosen one is upsampled again with gradient.

Supervision of one prediction (object o, frame t, correction step k), as in SAM 2:

* of K outputs (3 for a single click or tracking), the one with the lowest
  ``20 * focal + dice`` against the target is supervised ("best of multimask"); SAM 2 lets the
  other outputs specialise on other plausible masks;
* focal (alpha 0.25, gamma 2, mean over pixels) x 20 and dice x 1 on that output, and the IoU
  loss between the predicted and the actual IoU x 1 (binary cross-entropy on the IoU head's
  logit, not SAM 2's L1: see :func:`iou_loss`) - only where the object is present on that frame
  (an absent object has no mask to learn; its mask logits are not supervised);
* with ``supervise_all_iou`` (the default, as in SAM 2.1's and CellSAM2's training configs) the
  IoU term is the mean L1 over *every* output, not just the supervised one. Tracking keeps the
  output with the highest predicted IoU; if only the best output's IoU is trained, the others'
  predictions are never corrected and tracking keeps wrong outputs (measured in issue 9: the kept
  output was the best one in 12.5 % of decoder passes, eval loss 68.4 vs 5.94 in train mode);
* object-score BCE x 1 on every prediction (target: present on that frame);
* with a division head (CellSAM2's, :mod:`napari_cellsam2.model.heads`): division-score BCE x 1
  (``loss_div``) on every prediction, target 1 on the mother's tracked decode at a GT division
  and 0 elsewhere. That decode is supervised as a division instead of as the mother: its
  multimask outputs 1 and 2 against the daughters they were matched to (focal + dice each, the
  IoU term over those two outputs) and the object score as present. The mother is not tracked
  after her division, so she is never taught to vanish there.

Differences from SAM 2's training code, on purpose: mask terms use the decoder's raw logits, not
the ones replaced by ``NO_OBJ_SCORE`` when the object score is negative, so a mask head keeps
learning while the object score is still wrong (gated logits give it zero gradient and a huge
constant loss); outputs of mask prompts used directly as output are not predictions and are not
supervised. Terms are summed over objects, steps and frames and divided by the number of objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .forward import DivisionStep, StepOutput

__all__ = [
    "DEFAULT_WEIGHTS",
    "LossWeights",
    "clip_losses",
    "dice_loss",
    "division_losses",
    "focal_loss",
    "iou_loss",
    "mask_iou",
    "step_losses",
]

TERMS = ("focal", "dice", "iou", "obj")
DIV = "div"


@dataclass(frozen=True)
class LossWeights:
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    obj: float = 1.0
    div: float = 1.0
    # BCE weight of a dividing mother's decode against the others' (1: the seed's plain BCE).
    # A clip holds about one division among tens of decodes, so the head learns slowly.
    div_pos_weight: float = 1.0


DEFAULT_WEIGHTS = LossWeights()


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss averaged over the last two (pixel) dims: (..., H, W) -> (...).

    Cross-entropy down-weighted by ``(1 - p_t) ** gamma`` so the many easy background pixels do
    not swamp the few hard boundary pixels; ``alpha`` weights positives vs negatives.
    """
    logits, targets = torch.broadcast_tensors(logits.float(), targets.float())
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss ``1 - (2|P.T| + 1) / (|P| + |T| + 1)`` per mask: (..., H, W) -> (...).

    Insensitive to object size (a small cell counts as much as a big one); 0 for a perfect mask.
    """
    logits, targets = torch.broadcast_tensors(logits.float(), targets.float())
    prob = torch.sigmoid(logits).flatten(-2)
    targets = targets.flatten(-2)
    inter = (prob * targets).sum(-1)
    return 1 - (2 * inter + smooth) / (prob.sum(-1) + targets.sum(-1) + smooth)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks (..., H, W) -> (...); 1 when both are empty (nothing to get wrong)."""
    pred, target = pred.flatten(-2), target.flatten(-2)
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def iou_loss(predicted: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """Loss of predicted IoUs (SAM 2's head outputs ``sigmoid(z)``) against actual IoUs, as
    binary cross-entropy on the head's logit ``z``: elementwise, same shape.

    SAM 2 trains the IoU head with L1 on ``sigmoid(z)``. Its gradient carries ``sigmoid'(z)``,
    which vanishes once ``z`` saturates, and Adam drives the logits of outputs whose actual IoU is
    0 (most non-best multimask outputs) towards -inf at a constant rate. On the memory-path
    overfit (scripts/iou_loss_probe.py) every IoU logit sank far below zero, including that of
    the output that fitted, so tracking kept a wrong output (tracked-frame IoU 0.04). The
    cross-entropy gradient on ``z`` is ``sigmoid(z) - actual``: it never vanishes while the
    prediction is wrong, so a saturated head recovers. ``z`` is recovered exactly from the
    float32 probability (representable down to z of about -85).
    """
    prob = predicted.float().clamp(1e-37, 1.0 - 1e-7)
    return F.binary_cross_entropy_with_logits(torch.logit(prob), actual.float(), reduction="none")


def _upsample(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)


def step_losses(
    step: StepOutput,
    targets: torch.Tensor,
    weights: LossWeights = DEFAULT_WEIGHTS,
    supervise_all_iou: bool = True,
) -> dict[str, torch.Tensor]:
    """Unweighted per-object terms (m,) of one prediction; ``targets`` (m, S, S) bool/float."""
    targets = targets.float()
    size = targets.shape[-1]
    present = targets.flatten(1).any(1)
    logits, m = step.mask_logits, step.mask_logits.shape[0]
    rows = torch.arange(m, device=logits.device)
    with torch.no_grad():
        up = _upsample(logits, size)  # (m, K, S, S)
        if logits.shape[1] > 1:
            combo = weights.focal * focal_loss(up, targets[:, None])
            combo = combo + weights.dice * dice_loss(up, targets[:, None])
            best = combo.argmin(1)
        else:
            best = torch.zeros(m, dtype=torch.long, device=logits.device)
        actual_iou = mask_iou(up > 0, targets[:, None] > 0.5)  # (m, K)
    best_up = _upsample(logits[rows, best][:, None], size)[:, 0]
    iou_error = iou_loss(step.iou_scores, actual_iou)
    iou_term = iou_error.mean(1) if supervise_all_iou else iou_error[rows, best]
    # the output the tracker keeps: highest predicted IoU of a multimask decode, else output 0
    kept = step.iou_scores.argmax(1) if logits.shape[1] > 1 else best
    gate = present.float()
    return {
        "focal": focal_loss(best_up, targets) * gate,
        "dice": dice_loss(best_up, targets) * gate,
        "iou": iou_term * gate,
        "kept_iou": actual_iou[rows, kept] * gate,
        "obj": F.binary_cross_entropy_with_logits(
            step.object_score_logits.float(), gate, reduction="none"
        ),
    }


def division_losses(
    step: StepOutput, rows: torch.Tensor, daughters: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Unweighted terms (r,) of the mothers at ``rows`` of ``step`` decoded as divisions:
    outputs 1 and 2 against ``daughters`` (r, 2, S, S), in the matched order."""
    targets = daughters.float()
    size = targets.shape[-1]
    logits = step.mask_logits[rows, 1:3]  # (r, 2, h, w)
    up = _upsample(logits, size)
    with torch.no_grad():
        actual_iou = mask_iou(up > 0, targets > 0.5)
    return {
        "focal": focal_loss(up, targets).sum(1),
        "dice": dice_loss(up, targets).sum(1),
        "iou": iou_loss(step.iou_scores[rows, 1:3], actual_iou).mean(1),
        "obj": F.binary_cross_entropy_with_logits(
            step.object_score_logits[rows].float(),
            torch.ones_like(actual_iou[:, 0]),
            reduction="none",
        ),
    }


def clip_losses(
    steps: Iterable[StepOutput],
    targets: torch.Tensor,
    num_objects: int,
    weights: LossWeights = DEFAULT_WEIGHTS,
    supervise_all_iou: bool = True,
    divisions: Sequence[DivisionStep] = (),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total over all predictions of a clip, divided by ``num_objects``.

    ``targets`` (M, T, S, S): each object's target per frame; ``divisions``: the teacher-forced
    divisions of :func:`.forward.run_clip` (supervised as the module docstring says). Returns
    the scalar loss (with grad) and ``parts``: the unweighted term sums (``focal``, ``dice``,
    ``iou``, ``obj``, and ``div`` with a division head, each divided by ``num_objects``),
    ``total`` = ``20 focal + dice + iou + obj (+ div)`` (with the default weights) and
    ``kept_iou``: the mean actual IoU of the output the tracker would keep, over predictions of
    present objects (not a loss term; in eval mode it is what tracking gets).
    """
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    at_step: dict[int, list[DivisionStep]] = {}
    for division in divisions:
        at_step.setdefault(division.step, []).append(division)
    sums: dict[str, torch.Tensor] = {}

    def add(name: str, value: torch.Tensor) -> None:
        sums[name] = sums[name] + value.sum() if name in sums else value.sum()

    kept_sum, present = 0.0, 0
    for index, step in enumerate(steps):
        step_targets = targets[step.objects, step.frame]
        terms = step_losses(step, step_targets, weights, supervise_all_iou)
        here = at_step.get(index, [])
        kept_sum = kept_sum + terms.pop("kept_iou").sum()
        present = present + step_targets.flatten(1).any(1).sum()
        dividing = None  # (m,) 1 on the mothers dividing at this step
        if here or step.division_logits is not None:
            dividing = torch.zeros(step.objects.shape[0], device=targets.device)
        if here:
            rows = torch.tensor([d.row for d in here], device=targets.device)
            dividing[rows] = 1.0
            pairs = torch.tensor([d.daughters for d in here], device=targets.device)
            for name, value in division_losses(step, rows, targets[pairs, step.frame]).items():
                add(name, value)
            terms = {name: value * (1 - dividing) for name, value in terms.items()}
        for name, value in terms.items():
            add(name, value)
        if step.division_logits is not None:
            bce = F.binary_cross_entropy_with_logits(
                step.division_logits.float(),
                dividing,
                reduction="none",
                pos_weight=dividing.new_tensor(weights.div_pos_weight),
            )
            add(DIV, bce)
    device = targets.device
    names = (*TERMS, DIV) if DIV in sums else TERMS
    sums = {name: sums.get(name, torch.zeros((), device=device)) / num_objects for name in names}
    total = sum(getattr(weights, name) * sums[name] for name in names)
    if torch.is_grad_enabled() and not total.requires_grad:
        # nothing predicted (e.g. one frame, mask prompts only): a zero that backward accepts
        total = total.detach().requires_grad_()
    parts = {name: float(value.detach()) for name, value in sums.items()}
    parts["total"] = float(total.detach())
    if int(present):
        parts["kept_iou"] = float(kept_sum / present)
    return total, parts
