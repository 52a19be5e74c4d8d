"""The training forward (SAM 2 through time with autograd), its prompts, losses and objective.

The central test compares the training forward with transformers' own inference session: if
they agree, fine-tuning teaches exactly the computation the tracker runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import Sam2VideoInferenceSession

from napari_cellsam2.training.config import ScratchConfig
from napari_cellsam2.training.data import ClipBatch
from napari_cellsam2.training.forward import NO_OBJ_SCORE, StepOutput, run_clip
from napari_cellsam2.training.losses import (
    clip_losses,
    dice_loss,
    focal_loss,
    mask_iou,
    step_losses,
)
from napari_cellsam2.training.objective import clip_loss
from napari_cellsam2.training.params import apply_lora
from napari_cellsam2.training.prompts import (
    KIND_BOX,
    KIND_CLICK,
    KIND_MASK,
    ClickCorrector,
    ObjectPrompts,
    jitter_boxes,
    mask_boxes,
    sample_pixels,
    sample_prompts,
)
from sam2_reference import trained_like_model as tiny_model


def square(size: int, y0: int, x0: int, side: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[y0 : y0 + side, x0 : x0 + side] = 1
    return mask


def make_batch(
    size: int = 64,
    frames: int = 3,
    clips: int = 1,
    daughter: bool = False,
    background: bool = False,
    seed: int = 1,
) -> ClipBatch:
    """Bright and dark squares moving; optionally a daughter from frame 2 and a background slot."""
    g = torch.Generator().manual_seed(seed)
    a = size // 8
    slots = 2 + daughter + background
    pixels = 0.3 * torch.randn(clips, frames, 3, size, size, generator=g)
    targets = torch.zeros(clips, frames, slots, size, size)
    for b in range(clips):
        for t in range(frames):
            cell0 = square(size, a + b, a + t, 2 * a)
            cell1 = square(size, 5 * a, 4 * a + b, 2 * a)
            targets[b, t, 0], targets[b, t, 1] = cell0, cell1
            pixels[b, t] += 1.5 * cell0 - 1.5 * cell1
            if daughter and t >= 2:
                cell2 = square(size, a, 5 * a, a)
                targets[b, t, 2] = cell2
                pixels[b, t] += 1.5 * cell2
    prompt_frame = torch.zeros(clips, slots, dtype=torch.long)
    is_background = torch.zeros(clips, slots, dtype=torch.bool)
    if daughter:
        prompt_frame[:, 2] = 2
    if background:
        is_background[:, -1] = True
    return ClipBatch(
        pixel_values=pixels,
        targets=targets,
        obj_valid=torch.ones(clips, slots, dtype=torch.bool),
        prompt_frame=prompt_frame,
        is_background=is_background,
        valid_region=torch.ones(clips, size, size, dtype=torch.bool),
        foreground=torch.zeros(clips, size, size, dtype=torch.bool),  # no cell beyond the targets
        object_ids=torch.arange(1, slots + 1).repeat(clips, 1) * (~is_background),
        parent_slot=torch.full((clips, slots), -1, dtype=torch.long),
        centres=torch.zeros(clips, frames, size // 4, size // 4),
    )


def scratch(**overrides) -> ScratchConfig:
    base = dict(prob_point=0.0, prob_box=0.0, prob_mask=1.0, num_correction_pt_per_frame=0)
    base.update(overrides)
    return ScratchConfig(**base)


def session_masks(model, pixels: torch.Tensor, add_inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' tracker on a clip: prompts on frame 0, propagate.

    Returns mask logits (N, T, h, w) and object scores (N, T).
    """
    frames, _, size, _ = pixels.shape
    session = Sam2VideoInferenceSession(
        video=pixels, video_height=size, video_width=size, dtype=torch.float32
    )
    ids = add_inputs(session)
    session.obj_with_new_inputs = list(ids)
    model(inference_session=session, frame_idx=0)
    outputs = list(model.propagate_in_video_iterator(session, start_frame_idx=0))
    assert [o.frame_idx for o in outputs] == list(range(frames))
    masks = torch.stack([o.pred_masks[:, 0] for o in outputs], dim=1)
    scores = torch.stack([o.object_score_logits.reshape(-1) for o in outputs], dim=1)
    return masks, scores


# ---- equivalence with inference ------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["mask", "click_and_box"])
def test_forward_matches_transformers_inference_session(prompt):
    # more frames than the object-pointer window (16) and the memory window (7): both windows
    # are compared with transformers
    size, frames = 128, 24
    model = tiny_model(size).eval()
    pixels = torch.randn(frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    if prompt == "mask":
        # A third object prompted with an empty mask, and an object-score head that varies with
        # the input around 0: two objects stay present, the third is judged absent on every frame
        # (no-object pointer, occlusion embedding and NO_OBJ_SCORE gating are all exercised).
        with torch.no_grad():
            head = model.mask_decoder.pred_obj_score_head.proj_out
            head.weight.mul_(300.0)
            head.bias.fill_(2.35)
        empty = torch.zeros(size, size)
        masks = torch.stack([square(size, 20, 25, 25), square(size, 75, 60, 30), empty])

        def add(session):
            for obj_id, mask in enumerate(masks, start=1):
                session.add_mask_inputs(session.obj_id_to_idx(obj_id), 0, mask[None, None])
            return (1, 2, 3)

        prompts = ObjectPrompts.from_masks(masks)
    else:
        box, click = [[60.0, 70.0], [90.0, 100.0]], [[30.0, 40.0]]

        def add(session):  # object 1: a box (two points labelled 2, 3), object 2: a click
            session.add_point_inputs(
                session.obj_id_to_idx(1),
                0,
                {"point_coords": torch.tensor([[box]]), "point_labels": torch.tensor([[[2, 3]]])},
            )
            session.add_point_inputs(
                session.obj_id_to_idx(2),
                0,
                {"point_coords": torch.tensor([[click]]), "point_labels": torch.tensor([[[1]]])},
            )
            return (1, 2)

        # the forward batches clicks before boxes, so this also checks the object order is kept
        prompts = ObjectPrompts.from_clicks(torch.tensor([[0.0, 0.0], click[0]]))
        prompts.kind[0] = KIND_BOX
        prompts.point_coords[0] = torch.tensor(box)
        prompts.point_labels[0] = torch.tensor([2, 3], dtype=torch.int32)

    expected, expected_scores = session_masks(model, pixels, add)
    num = len(prompts)
    with torch.no_grad():
        out = run_clip(
            model,
            pixels,
            batch_index=torch.zeros(num, dtype=torch.long),
            prompt_frame=torch.zeros(num, dtype=torch.long),
            prompts=prompts,
            pointer_horizon=frames,  # a non-streaming session of exactly these frames
        )
    # the comparison is meaningful: O(1) logits, masks neither empty nor full on tracked frames
    present = expected_scores[:2, 1:]
    assert expected.abs().max() > 1.0 and (present > 0).all()
    fg = (expected[:2, 1:] > 0).float().mean((2, 3))
    assert ((fg > 0.05) & (fg < 0.95)).all()
    if prompt == "mask":
        assert (expected_scores[2] < 0).all() and (expected[2, 1:] == NO_OBJ_SCORE).all()
    # Both sides round memory features to bf16 identically (transformers' _encode_new_memory is
    # called by both), so what remains is float32 batching noise.
    torch.testing.assert_close(out.pred_masks, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.object_score_logits, expected_scores, atol=1e-5, rtol=0)
    assert out.tracked.all()


def test_daughter_memory_starts_at_its_prompt_frame():
    """A daughter prompted on frame 2 is predicted exactly as if the clip started there."""
    size, frames = 64, 5
    model = tiny_model(size).eval()
    pixels = torch.randn(frames, 3, size, size, generator=torch.Generator().manual_seed(2))
    masks = torch.stack([square(size, 8, 8, 16), square(size, 40, 30, 12)])
    prompts = ObjectPrompts.from_masks(masks)
    zero = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        both = run_clip(
            model, pixels, torch.zeros(2, dtype=torch.long), torch.tensor([0, 2]), prompts
        )
        mother = run_clip(model, pixels, zero, zero, prompts.subset(torch.tensor([0])))
        daughter = run_clip(model, pixels[2:], zero, zero, prompts.subset(torch.tensor([1])))
    torch.testing.assert_close(both.pred_masks[0], mother.pred_masks[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(both.pred_masks[1, 2:], daughter.pred_masks[0], atol=1e-5, rtol=0)
    assert (both.pred_masks[1, :2] == NO_OBJ_SCORE).all()
    assert both.tracked[1].tolist() == [False, False, True, True, True]
    assert all(s.frame >= 2 for s in both.steps if 1 in s.objects.tolist())


# ---- training: gradients and overfitting ---------------------------------------------------


def test_full_mode_gradients_reach_memory_attention_and_encoder():
    model = tiny_model(64).train()
    loss, parts = clip_loss(model, make_batch(), scratch(), torch.Generator().manual_seed(0))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for prefix in ("memory_attention.", "memory_encoder.", "mask_decoder.", "vision_encoder."):
        total = sum(
            float(g.abs().sum()) for n, g in grads.items() if n.startswith(prefix) and g is not None
        )
        assert total > 0, prefix
    assert grads["memory_temporal_positional_encoding"].abs().sum() > 0
    assert grads["object_pointer_proj.layers.0.weight"].abs().sum() > 0
    assert math.isclose(
        parts["total"],
        20 * parts["focal"] + parts["dice"] + parts["iou"] + parts["obj"],
        rel_tol=1e-5,
    )


def test_lora_gradients_reach_memory_attention_adapters_and_base_stays_frozen():
    model = tiny_model(64)
    peft_model = apply_lora(model, ScratchConfig())
    model.train()
    frozen = {
        n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad
    }
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    heads = ("iou_prediction_head.modules_to_save", "pred_obj_score_head.modules_to_save")
    extra = tuple(f"model.{name}" for name in peft_model.cellsam2_trained_parameters)
    assert {"no_memory_embedding", "no_object_pointer"} <= set(
        peft_model.cellsam2_trained_parameters
    )
    assert trainable and all(
        "lora_" in n or any(h in n for h in heads) or n.endswith(extra) for n in trainable
    ), sorted(trainable)
    assert all(any(h in n for n in trainable) for h in heads)
    loss, _ = clip_loss(peft_model, make_batch(), scratch(), torch.Generator().manual_seed(0))
    loss.backward()
    memory_lora = [n for n in trainable if "memory_attention" in n and "lora_B" in n]
    assert memory_lora
    iou_head = [n for n in trainable if "iou_prediction_head.modules_to_save" in n]
    for name in [*memory_lora, *iou_head]:
        assert trainable[name].grad is not None and trainable[name].grad.abs().sum() > 0, name
    before = {n: p.detach().clone() for n, p in trainable.items()}
    torch.optim.Adam(trainable.values(), lr=1e-3).step()
    for name, p in peft_model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert any(not torch.equal(trainable[n], before[n]) for n in memory_lora)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_overfits_one_clip(mode):
    torch.manual_seed(0)  # memory-attention dropout
    model = tiny_model(64)
    target = apply_lora(model, ScratchConfig()) if mode == "lora" else model
    model.train()
    batch = make_batch()
    cfg = scratch()
    optimiser = torch.optim.Adam([p for p in target.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(40):
        loss, _ = clip_loss(target, batch, cfg, torch.Generator().manual_seed(0))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


# ---- objective: daughters, background, batches, segmentation mode --------------------------


def test_daughter_has_no_loss_before_its_prompt_frame():
    model = tiny_model(64).eval()
    cfg = scratch()
    batch = make_batch(frames=4, daughter=True)

    def parts_with(frame: int) -> dict[str, float]:
        changed = ClipBatch(**{**batch.__dict__, "targets": batch.targets.clone()})
        changed.targets[0, frame, 2] = square(64, 0, 0, 20)  # another target for the daughter
        with torch.no_grad():
            return clip_loss(model, changed, cfg, torch.Generator().manual_seed(0))[1]

    with torch.no_grad():
        _, ref = clip_loss(model, batch, cfg, torch.Generator().manual_seed(0))
    for early in (0, 1):  # before its prompt frame (2): no term of the loss sees it
        assert parts_with(early) == pytest.approx(ref, abs=1e-6)
    late = parts_with(3)  # after it, it counts
    assert abs(late["dice"] - ref["dice"]) > 1e-3


def test_background_object_gets_only_object_score_loss():
    model = tiny_model(64).eval()
    batch = make_batch(frames=2, background=True)
    cfg = scratch(prob_mask=0.0, prob_point=1.0)
    _, parts = clip_loss(model, batch, cfg, torch.Generator().manual_seed(0))
    # the tiny model's object score is +10 everywhere: the background's "no object" target costs
    # ~10 per frame (BCE of logit 10 vs 0), the cells' "present" almost nothing
    assert parts["obj"] * 3 == pytest.approx(2 * 10.0, rel=0.05)


def test_batch_of_two_clips_is_tracked_like_each_clip_alone():
    model = tiny_model(64).eval()
    batch = make_batch(clips=2)
    masks = batch.targets[:, 0].reshape(4, 64, 64)
    prompts = ObjectPrompts.from_masks(masks)
    with torch.no_grad():
        joint = run_clip(
            model,
            batch.pixel_values,
            torch.tensor([0, 0, 1, 1]),
            torch.zeros(4, dtype=torch.long),
            prompts,
        )
        second = run_clip(
            model,
            batch.pixel_values[1],
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            prompts.subset(torch.tensor([2, 3])),
        )
    torch.testing.assert_close(joint.pred_masks[2:], second.pred_masks, atol=1e-5, rtol=0)
    loss, parts = clip_loss(
        model.train(),
        batch,
        scratch(prob_point=1.0, prob_mask=0.0),
        torch.Generator().manual_seed(0),
    )
    loss.backward()
    assert math.isfinite(parts["total"]) and parts["dice"] > 0


def test_segmentation_mode_with_corrections():
    model = tiny_model(64).train()
    batch = make_batch(frames=1, clips=2, background=True)
    cfg = scratch(prob_point=1.0, prob_mask=0.0, num_correction_pt_per_frame=2)
    generator = torch.Generator().manual_seed(0)
    prompts, _ = sample_prompts(
        batch.targets[:, 0].reshape(-1, 64, 64) > 0,
        batch.is_background.flatten(),
        torch.ones(6, 64, 64, dtype=torch.bool),
        1,
        0,
        0,
        generator,
    )
    targets = batch.targets.permute(0, 2, 1, 3, 4).reshape(6, 1, 64, 64) > 0
    corrector = ClickCorrector(
        targets, torch.ones(6, 64, 64, dtype=torch.bool), 2, 0.0, torch.Generator().manual_seed(1)
    )
    out = run_clip(
        model,
        batch.pixel_values,
        torch.tensor([0, 0, 0, 1, 1, 1]),
        torch.zeros(6, dtype=torch.long),
        prompts,
        corrector,
    )
    # one click -> 3 outputs (ambiguous), then 2 and 3 clicks -> a single output, as inference
    assert [(s.step, s.mask_logits.shape[1]) for s in out.steps] == [(0, 3), (1, 1), (2, 1)]
    loss, parts = clip_loss(model, batch, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(parts["total"])
    assert model.mask_decoder.mask_tokens.weight.grad.abs().sum() > 0


def test_bad_inputs_are_rejected():
    model = tiny_model(64)
    batch = make_batch()
    with pytest.raises(ValueError, match="prompt_frame"):
        run_clip(
            model,
            batch.pixel_values,
            torch.zeros(1, dtype=torch.long),
            torch.tensor([3]),
            ObjectPrompts.from_masks(batch.targets[0, 0, :1]),
        )
    empty = ClipBatch(**{**batch.__dict__, "obj_valid": torch.zeros_like(batch.obj_valid)})
    with pytest.raises(ValueError, match="no valid objects"):
        clip_loss(model, empty, scratch())
    with pytest.raises(ValueError, match="empty mask on their prompt frame"):
        sample_prompts(
            torch.zeros(1, 8, 8, dtype=torch.bool),
            torch.tensor([False]),
            torch.ones(1, 8, 8, dtype=torch.bool),
            1,
            0,
            0,
        )


# ---- losses on hand-made examples ----------------------------------------------------------


def test_focal_and_dice_by_hand():
    zero = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # logit 0: p = 0.5 everywhere; focal = alpha_t * 0.5^2 * ln 2 per pixel
    expected = (2 * 0.25 + 2 * 0.75) * 0.25 * math.log(2) / 4
    assert float(focal_loss(zero, target)) == pytest.approx(expected, rel=1e-6)
    # dice = 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert float(dice_loss(zero, target)) == pytest.approx(0.4, rel=1e-6)
    perfect = 40 * target - 20
    assert float(dice_loss(perfect, target)) < 1e-6
    assert float(focal_loss(perfect, target)) < 1e-9
    assert float(focal_loss(-perfect, target)) > 1.0
    assert (
        float(mask_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)))
        == 1.0
    )
    assert float(mask_iou(target > 0, torch.ones(2, 2, dtype=torch.bool))) == 0.5


def _step(logits, iou, obj, objects=(0,)):
    return StepOutput(0, 0, torch.tensor(objects), logits, iou, obj)


def test_step_losses_pick_best_output_and_gate_by_presence():
    size = 16
    target = square(size, 4, 4, 8)[None]
    right = 40 * target - 20  # logits at the target's size: upsampling is the identity
    logits = torch.stack([-right, right, torch.zeros_like(right)], dim=1)  # output 1 is right
    iou = torch.tensor([[0.9, 0.7, 0.1]])
    terms = step_losses(_step(logits, iou, torch.tensor([5.0])), target, supervise_all_iou=False)
    assert float(terms["dice"]) < 1e-6 and float(terms["focal"]) < 1e-9
    # cross-entropy of the predicted 0.7 against the actual IoU 1 of the right mask
    assert float(terms["iou"]) == pytest.approx(-math.log(0.7), rel=1e-5)
    # all outputs (the default): actual IoUs 0 (inverted), 1 (right), 0 (empty mask)
    terms = step_losses(_step(logits, iou, torch.tensor([5.0])), target)
    assert float(terms["dice"]) < 1e-6 and float(terms["focal"]) < 1e-9
    expected = -(math.log(1 - 0.9) + math.log(0.7) + math.log(1 - 0.1)) / 3
    assert float(terms["iou"]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["obj"]) == pytest.approx(math.log1p(math.exp(-5.0)), rel=1e-5)

    empty = torch.zeros(1, size, size)
    terms = step_losses(_step(logits, iou, torch.tensor([5.0])), empty)
    assert float(terms["focal"]) == float(terms["dice"]) == float(terms["iou"]) == 0.0
    assert float(terms["obj"]) == pytest.approx(5.0, rel=1e-2)  # says present, target absent


def test_all_output_iou_supervision_trains_every_iou_prediction():
    """Tracking keeps the output with the highest predicted IoU, so every output's prediction
    must learn its real IoU; with best-output supervision the others get no gradient."""
    size = 16
    target = square(size, 4, 4, 8)[None]
    right = 40 * target - 20
    logits = torch.stack([-right, right, torch.zeros_like(right)], dim=1)
    for all_outputs, trained in ((True, [True, True, True]), (False, [False, True, False])):
        iou = torch.tensor([[0.9, 0.7, 0.1]], requires_grad=True)
        terms = step_losses(
            _step(logits, iou, torch.tensor([5.0])), target, supervise_all_iou=all_outputs
        )
        terms["iou"].sum().backward()
        assert [bool(g != 0) for g in iou.grad[0]] == trained
        # the gradient pushes each prediction towards its output's actual IoU (0, 1, 0)
        assert iou.grad[0, 1] < 0
        if all_outputs:
            assert iou.grad[0, 0] > 0 and iou.grad[0, 2] > 0


def test_iou_loss_keeps_a_gradient_when_the_head_saturates():
    """SAM 2's L1 on sigmoid(z) has no gradient left at z = -20; the cross-entropy on z does,
    so a saturated IoU head can recover (see losses.iou_loss)."""
    from napari_cellsam2.training.losses import iou_loss

    z = torch.tensor([-20.0, 0.0, 8.0], requires_grad=True)
    actual = torch.tensor([0.8, 0.5, 0.0])
    iou_loss(torch.sigmoid(z), actual).sum().backward()
    torch.testing.assert_close(z.grad, torch.sigmoid(z).detach() - actual, rtol=1e-4, atol=1e-6)
    l1 = torch.tensor([-20.0], requires_grad=True)
    (torch.sigmoid(l1) - 0.8).abs().sum().backward()
    assert abs(float(l1.grad)) < 1e-8  # what the old loss left


def test_clip_losses_normalise_by_objects():
    size = 16
    targets = torch.stack([square(size, 4, 4, 8), torch.zeros(size, size)])[:, None]  # (2, 1, S, S)
    logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
    step = StepOutput(0, 0, torch.tensor([0, 1]), logits, torch.ones(2, 1), torch.zeros(2))
    total, parts = clip_losses([step], targets, num_objects=2)
    single = step_losses(step, targets[:, 0])
    assert parts["dice"] == pytest.approx(float(single["dice"].sum()) / 2, rel=1e-6)
    assert parts["obj"] == pytest.approx(math.log(2), rel=1e-6)
    total.backward()
    assert logits.grad[1].abs().sum() == 0  # the absent object's mask is not supervised
    assert logits.grad[0].abs().sum() > 0


# ---- prompts -------------------------------------------------------------------------------


def test_sample_pixels_is_uniform_inside_region_and_flags_empty():
    region = torch.zeros(3, 10, 12, dtype=torch.bool)
    region[0, 2:4, 5:9] = True
    region[1, 9, 11] = True
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_pixels(region, g)[0] for _ in range(400)])  # (400, 3, 2)
    _, ok = sample_pixels(region, g)
    assert ok.tolist() == [True, True, False]
    inside = region[0, draws[:, 0, 1].long(), draws[:, 0, 0].long()]
    assert inside.all()
    assert len({tuple(p) for p in draws[:, 0].tolist()}) == 8  # every pixel of the region is hit
    assert (draws[:, 1] == torch.tensor([11.0, 9.0])).all()


def test_boxes_are_tight_then_jittered_within_ten_percent():
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 4:14, 6:26] = True
    masks[1, 0:32, 30:32] = True
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[6, 4, 25, 13], [30, 0, 31, 31]]
    jittered = jitter_boxes(boxes, 32, torch.Generator().manual_seed(0))
    wh = (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)
    assert ((jittered - boxes).abs() <= 0.1 * wh + 1e-6).all()
    assert (jittered >= 0).all() and (jittered <= 31).all()
    assert not torch.equal(jittered, boxes)


def test_training_boxes_stay_inside_the_image_of_a_letterboxed_frame():
    """A 128 x 24 trench on a 64-px canvas fills columns 0..11; the tracker refuses a box past
    them, so a jittered training box must not reach into the padding (69 of 400 corners did)."""
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[0, :, :12] = True
    tight = torch.tensor([[2.0, 20.0, 11.0, 40.0]])  # a cell touching the image's right edge
    for seed in range(100):
        box = jitter_boxes(tight, 64, torch.Generator().manual_seed(seed), valid)
        assert box[0, 2] <= 11 and box[0, 3] <= 63 and box[0, 0] >= 0


def test_sample_prompts_kinds_and_background_clicks():
    size = 32
    masks = (
        torch.stack([square(size, 2, 2, 8), square(size, 20, 20, 8), torch.zeros(size, size)]) > 0
    )
    is_bg = torch.tensor([False, False, True])
    valid = torch.zeros(3, size, size, dtype=torch.bool)
    valid[:, :, :16] = True
    empty_space = valid & ~(masks[0] | masks[1])
    g = torch.Generator().manual_seed(0)
    prompts, ok = sample_prompts(masks, is_bg, empty_space, 0.0, 1.0, 0.0, g)
    assert ok.all()
    assert prompts.kind.tolist() == [KIND_BOX, KIND_BOX, KIND_CLICK]
    assert prompts.point_labels[:2].tolist() == [[2, 3], [2, 3]]
    x, y = prompts.point_coords[2, 0].long().tolist()
    assert empty_space[2, y, x] and prompts.point_labels[2].tolist() == [1, -10]
    clicks, _ = sample_prompts(masks, is_bg, empty_space, 1.0, 0.0, 0.0, g)
    x, y = clicks.point_coords[0, 0].long().tolist()
    assert masks[0, y, x] and clicks.kind[0] == KIND_CLICK
    as_masks, _ = sample_prompts(masks, is_bg, empty_space, 0.0, 0.0, 1.0, g)
    assert as_masks.kind.tolist() == [KIND_MASK, KIND_MASK, KIND_CLICK]
    again, _ = sample_prompts(
        masks, is_bg, empty_space, 1.0, 0.0, 0.0, torch.Generator().manual_seed(5)
    )
    same, _ = sample_prompts(
        masks, is_bg, empty_space, 1.0, 0.0, 0.0, torch.Generator().manual_seed(5)
    )
    assert torch.equal(again.point_coords, same.point_coords)
    _, ok = sample_prompts(masks, is_bg, torch.zeros_like(empty_space), 1.0, 0.0, 0.0, g)
    assert ok.tolist() == [True, True, False]


def test_correction_clicks_target_the_errors():
    size = 16
    gt = square(size, 4, 4, 6) > 0
    targets = gt[None, None].repeat(3, 1, 1, 1)
    allowed = torch.ones(3, size, size, dtype=torch.bool)
    corrector = ClickCorrector(targets, allowed, 1, 0.0, torch.Generator().manual_seed(0))
    missed = gt.clone()
    missed[4:10, 4:7] = False  # false negatives only
    extra = gt | (square(size, 12, 12, 3) > 0)  # false positives only
    xy, labels = corrector(torch.arange(3), 0, torch.stack([missed, extra, gt]))
    (x0, y0), (x1, y1), (x2, y2) = xy[:, 0].long().tolist()
    assert labels[:, 0].tolist() == [1, 0, 0]
    assert gt[y0, x0] and not missed[y0, x0]  # positive click on a missed pixel
    assert extra[y1, x1] and not gt[y1, x1]  # negative click on a wrong pixel
    assert not gt[y2, x2]  # perfect: a negative click on the background
    from_gt = ClickCorrector(targets, allowed, 1, 1.0, torch.Generator().manual_seed(0))
    xy, labels = from_gt(torch.arange(3), 0, torch.stack([missed, extra, gt]))
    assert labels.flatten().tolist() == [1, 1, 1]


# ---- corrections on tracked frames -----------------------------------------------------------


def test_tracked_frame_correction_matches_a_click_in_the_tracking_session():
    """Training corrects tracked frames exactly as the session decodes a user's click on a frame
    that has memory, and the corrected frame becomes a conditioning frame for what follows."""
    from napari_cellsam2.model.preprocess import preprocess_frames
    from napari_cellsam2.tracking import TrackingSession

    size, frames, click = 128, 5, (70.0, 40.0)
    model = tiny_model(size).eval()
    with torch.no_grad():  # sharp attention over the memory: which memories it sees matters
        cross = model.memory_attention.layers[0].cross_attn_image
        for proj, scale in ((cross.q_proj, 8.0), (cross.k_proj, 8.0), (cross.o_proj, 10.0)):
            proj.weight.mul_(scale)
    rng = np.random.default_rng(3)
    movie = rng.integers(0, 3000, (frames, size, size)).astype(np.uint16)
    for t in range(frames):
        movie[t, 30 + 2 * t : 60 + 2 * t, 25:65] += 30000  # a bright cell drifting down
    first = np.zeros((size, size), bool)
    first[30:60, 25:65] = True

    session = TrackingSession(model, movie)
    session.add_mask(1, 0, first)
    list(session.propagate("forward"))
    before = session.labels.copy()
    session.add_points(1, 2, [click])  # a click on a tracked frame
    list(session.propagate("forward"))
    expected = session.labels == 1
    assert (expected[2:] != (before[2:] == 1)).any()  # the click changed something

    video, box = preprocess_frames(movie, size)
    point = torch.tensor(box.points_to_model(np.array([click])), dtype=torch.float32)

    def corrector(objects, frame, predicted):
        assert frame == 2
        return point[None].expand(len(objects), 1, 2), torch.ones(
            len(objects), 1, dtype=torch.int32
        )

    def run(as_cond: bool) -> np.ndarray:
        with torch.no_grad():
            out = run_clip(
                model,
                video,
                batch_index=torch.zeros(1, dtype=torch.long),
                prompt_frame=torch.zeros(1, dtype=torch.long),
                prompts=ObjectPrompts.from_masks(box.mask_to_model(first)[None].float()),
                corrector=corrector,
                num_corrections=1,
                pointer_horizon=frames,
                correct_frames=[2],
                correct_as_cond=as_cond,
            )
        return np.stack([box.logits_to_original(m).numpy() for m in out.pred_masks[0]])

    logits = run(as_cond=True)
    got = logits > 0
    mismatch = (got != expected).mean(axis=(1, 2))
    # frame 0 is the mask prompt (edge pixels resized differently); tracked frames match exactly
    # here (0 pixels), the bound leaves room only for float noise
    assert mismatch[0] < 2e-3 and mismatch[1:].max() < 5e-4, mismatch
    # as a tracked (non-conditioning) memory, at another temporal slot, later frames differ
    plain = run(as_cond=False)
    assert np.array_equal(plain[:3], logits[:3]) and np.abs(plain[3:] - logits[3:]).max() > 1e-2


def test_frames_to_correct_follow_sam2_sampling():
    from napari_cellsam2.training.prompts import frames_to_correct

    gen = torch.Generator().manual_seed(0)
    counts = {0: 0, 1: 0}
    for _ in range(200):
        extra = frames_to_correct(1, 6, 2, rand=True, generator=gen)
        counts[len(extra)] += 1
        assert all(2 <= f < 6 for f in extra)  # tracked frames after the first prompt frame
    assert counts[0] > 50 and counts[1] > 50  # 1 or 2 corrected frames, drawn per clip
    assert len(frames_to_correct(0, 6, 3, rand=False, generator=gen)) == 2
    assert frames_to_correct(0, 6, 1, rand=True, generator=gen) == []  # the prompt frame only
    assert frames_to_correct(5, 6, 2, rand=False, generator=gen) == []  # nothing after it


def test_teacher_forced_memory_holds_the_targets():
    """scratch.memory_from_gt (a curriculum for random weights): memory is encoded from the GT
    masks, not from the predictions, so later frames see the targets' identity."""
    from napari_cellsam2.training import forward

    model = tiny_model(64).eval()
    batch = make_batch(frames=3)
    targets = batch.targets[0].transpose(0, 1) > 0.5  # (M, T, S, S)
    seen = []
    encode = model._encode_new_memory

    def spy(**kwargs):
        seen.append(kwargs["pred_masks_high_res"].detach().clone())
        return encode(**kwargs)

    model._encode_new_memory = spy
    zeros = torch.zeros(2, dtype=torch.long)
    prompts = ObjectPrompts.from_masks(targets[:, 0].float())
    with torch.no_grad():
        plain = run_clip(model, batch.pixel_values, zeros, zeros, prompts)
        seen.clear()
        forced = run_clip(model, batch.pixel_values, zeros, zeros, prompts, memory_masks=targets)
    tracked = seen[1][:, 0]  # frame 1's memory input
    assert torch.equal(tracked > 0, targets[:, 1]) and tracked.abs().min() == 10
    assert not torch.equal(plain.pred_masks[:, 2], forced.pred_masks[:, 2])
    assert torch.equal(plain.pred_masks[:, :2], forced.pred_masks[:, :2])
    assert forward.MASK_OUT_SCALE + forward.MASK_OUT_BIAS == 10
