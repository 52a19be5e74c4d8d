"""CellSAM2's division head: teacher-forced divisions in training, learned divisions in the
tracker, and the head in checkpoints (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

from napari_cellsam2.ctc import Lineage
from napari_cellsam2.model.checkpoint import save_adapter_checkpoint, save_model_checkpoint
from napari_cellsam2.model.heads import HEADS_FILE, attach_division_head, division_head
from napari_cellsam2.model.hf_sam2 import COND
from napari_cellsam2.model.loading import ModelSpecError, load_model
from napari_cellsam2.tracking.division_config import DivisionConfig, resolve_mode
from napari_cellsam2.tracking.divisions import learned_division
from napari_cellsam2.tracking.session import TrackingSession
from napari_cellsam2.training.config import ScratchConfig
from napari_cellsam2.training.data import ClipBatch, CTCClipDataset, collate_clips
from napari_cellsam2.training.forward import DivisionStep, StepOutput, run_clip
from napari_cellsam2.training.losses import LossWeights, clip_losses
from napari_cellsam2.training.objective import clip_loss, gt_divisions
from napari_cellsam2.training.params import apply_lora
from napari_cellsam2.training.prompts import KIND_MASK, ObjectPrompts
from sam2_reference import backprop_reaches, trained_like_model

SIZE, FRAMES = 64, 4
MOTHER, TOP, BOTTOM, OTHER = 0, 1, 2, 3


def rect(y0: int, x0: int, h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[y0 : y0 + h, x0 : x0 + w] = 1
    return mask


def division_batch() -> ClipBatch:
    """A bright cell that divides on frame 2 into a top and a bottom daughter, and a dark
    cell that does not divide."""
    pixels = 0.3 * torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    targets = torch.zeros(1, FRAMES, 4, SIZE, SIZE)
    for t in range(FRAMES):
        if t < 2:
            targets[0, t, MOTHER] = rect(16, 16, 24, 16)
        else:
            targets[0, t, TOP], targets[0, t, BOTTOM] = rect(16, 16, 11, 16), rect(29, 16, 11, 16)
        targets[0, t, OTHER] = rect(46, 40, 10, 10)
        pixels[0, t] += 1.5 * targets[0, t, :3].sum(0) - 1.5 * targets[0, t, OTHER]
    return ClipBatch(
        pixel_values=pixels,
        targets=targets,
        obj_valid=torch.ones(1, 4, dtype=torch.bool),
        prompt_frame=torch.tensor([[0, 2, 2, 0]]),
        is_background=torch.zeros(1, 4, dtype=torch.bool),
        valid_region=torch.ones(1, SIZE, SIZE, dtype=torch.bool),
        foreground=torch.zeros(1, SIZE, SIZE, dtype=torch.bool),  # no cell beyond the targets
        object_ids=torch.tensor([[1, 2, 3, 4]]),
        parent_slot=torch.tensor([[-1, MOTHER, MOTHER, -1]]),
        centres=torch.zeros(1, FRAMES, SIZE // 4, SIZE // 4),
    )


def head_model(seed: int = 0):
    model = trained_like_model(SIZE, seed=seed)
    attach_division_head(model, seed=seed)
    return model


def clip_divisions(batch: ClipBatch):
    """The one-clip batch's teacher-forceable divisions (every slot valid, in order)."""
    targets = batch.targets[0].transpose(0, 1) > 0.5
    slots = torch.arange(batch.targets.shape[2])
    return gt_divisions(batch, torch.zeros_like(slots), slots, batch.prompt_frame[0], targets)


def mask_prompts(batch: ClipBatch) -> ObjectPrompts:
    first = batch.targets[0, batch.prompt_frame[0], torch.arange(4)] > 0.5
    return ObjectPrompts(
        kind=torch.full((4,), KIND_MASK),
        point_coords=torch.zeros(4, 2, 2),
        point_labels=torch.zeros(4, 2, dtype=torch.int32),
        masks=first,
    )


def run(model, batch: ClipBatch, divisions):
    return run_clip(
        model,
        batch.pixel_values,
        torch.zeros(4, dtype=torch.long),
        batch.prompt_frame[0],
        mask_prompts(batch),
        divisions=divisions,
    )


def last_frame_memories(model, batch: ClipBatch, divisions):
    """The outputs, and (memory tokens, objects) of each memory-attention call on the last
    frame (one call per group of objects sharing a memory bank)."""
    calls: list[tuple[int, int]] = []

    def spy(module, args, kwargs):
        calls.append((kwargs["memory"].shape[0], kwargs["current_vision_features"].shape[1]))

    handle = model.memory_attention.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        outputs = run(model, batch, divisions)
    finally:
        handle.remove()
    return outputs, calls[-2:]


def test_teacher_forced_division_inherits_memory_and_trains_the_head():
    batch = division_batch()
    model = head_model().eval()
    divisions = clip_divisions(batch)
    assert divisions is not None and divisions.frame.tolist() == [2]
    assert divisions.mother.tolist() == [MOTHER]
    _, plain = last_frame_memories(model, batch, None)
    outputs, divided = last_frame_memories(model, batch, divisions)
    # Without the division, frame 3 has the bank of mother + other cell (frames 0-2) and the
    # daughters' fresh bank (frame 2 only). With it, the other cell keeps the long bank and the
    # two daughters attend to as much as their mother would have: frames 0-2, her pointers.
    (long_bank, two), (fresh_bank, _) = plain
    assert two == 2 and long_bank > fresh_bank
    assert divided == [(long_bank, 1), (long_bank, 2)]
    # the mother is not decoded (nor supervised) after her division
    assert all(MOTHER not in step.objects.tolist() for step in outputs.steps if step.frame > 2)
    (division,) = outputs.divisions
    assert division.frame == 2 and division.mother == MOTHER
    assert set(division.daughters) == {TOP, BOTTOM}

    assert backprop_reaches(model, batch, division_head(model))["div"] > 0
    # scratch.div_pos_weight reaches the division loss (the GT division is a positive; eval
    # mode: no dropout, so the two losses differ only by the weight)
    model.eval()
    scratch = ScratchConfig(prob_point=0.0, prob_box=0.0, prob_mask=1.0)
    with torch.no_grad():
        plain = clip_loss(model, batch, scratch, torch.Generator().manual_seed(0))[1]["div"]
        scratch = ScratchConfig(prob_point=0.0, prob_box=0.0, prob_mask=1.0, div_pos_weight=10.0)
        weighted = clip_loss(model, batch, scratch, torch.Generator().manual_seed(0))[1]["div"]
    assert weighted > 2 * plain


def test_daughters_are_matched_to_the_outputs_at_minimum_cost():
    batch = division_batch()
    model = head_model().eval()
    targets = batch.targets[0].transpose(0, 1) > 0.5
    found = clip_divisions(batch)
    swapped = type(found)(
        found.frame, found.mother, found.daughters.flip(1), found.daughter_masks.flip(1)
    )
    outputs = run(model, batch, found)
    first = outputs.divisions[0]
    second = run(model, batch, swapped).divisions[0]
    assert first.daughters == second.daughters  # the assignment is the outputs', not the order's
    step = outputs.steps[first.step]
    up = F.interpolate(
        step.mask_logits[first.row, 1:3, None].detach(), size=(SIZE, SIZE), mode="bilinear"
    )
    chosen = [targets[d, 2] for d in first.daughters]
    other = chosen[::-1]

    def cost(order):
        return sum(
            float(F.binary_cross_entropy_with_logits(up[k, 0], order[k].float())) for k in (0, 1)
        )

    assert cost(chosen) <= cost(other) + 0.05


def test_division_step_is_supervised_as_two_daughters_not_as_a_vanishing_mother():
    m, size = 2, 8
    logits = torch.zeros(m, 3, size // 4 * 4, size // 4 * 4, requires_grad=True)
    step = StepOutput(
        frame=1,
        step=0,
        objects=torch.tensor([0, 1]),
        mask_logits=logits,
        iou_scores=torch.full((m, 3), 0.5),
        object_score_logits=torch.tensor([-3.0, 2.0]),
        division_logits=torch.tensor([0.5, -1.0]),
    )
    targets = torch.zeros(4, 2, size, size, dtype=torch.bool)
    targets[1, 1, :4] = True
    targets[2, 1, 4:6] = True
    targets[3, 1, 6:] = True
    division = DivisionStep(step=0, frame=1, mother=0, row=0, daughters=(2, 3))
    _, parts = clip_losses([step], targets, num_objects=4, divisions=[division])
    expected_obj = F.binary_cross_entropy_with_logits(torch.tensor(-3.0), torch.tensor(1.0))
    expected_obj = expected_obj + F.binary_cross_entropy_with_logits(
        torch.tensor(2.0), torch.tensor(1.0)
    )
    assert parts["obj"] == pytest.approx(float(expected_obj) / 4, rel=1e-5)
    expected_div = F.binary_cross_entropy_with_logits(
        torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.0]), reduction="sum"
    )
    assert parts["div"] == pytest.approx(float(expected_div) / 4, rel=1e-5)
    _, plain = clip_losses([step], targets, num_objects=4)
    assert plain["dice"] < parts["dice"]  # the daughters' two masks are supervised
    # div_pos_weight scales the dividing decode's term only (the non-dividing one stays)
    weights = LossWeights(div_pos_weight=10.0)
    _, weighted = clip_losses([step], targets, num_objects=4, weights=weights, divisions=[division])
    positive = F.binary_cross_entropy_with_logits(torch.tensor(0.5), torch.tensor(1.0))
    negative = F.binary_cross_entropy_with_logits(torch.tensor(-1.0), torch.tensor(0.0))
    assert weighted["div"] == pytest.approx(float(10 * positive + negative) / 4, rel=1e-5)


def test_clip_dataset_marks_mothers_for_the_division_targets():
    labels = np.zeros((4, 32, 32), np.uint16)
    labels[:2, 4:20, 4:12] = 1
    labels[2:, 4:11, 4:12], labels[2:, 13:20, 4:12] = 2, 3
    labels[:, 24:30, 20:28] = 4
    images = labels.astype(np.float32) * 50
    lineage = Lineage.parse("1 0 1 0\n2 2 3 1\n3 2 3 1\n4 0 3 0\n")
    dataset = CTCClipDataset.from_arrays(
        images,
        labels,
        lineage,
        num_frames=4,
        resolution=64,
        max_num_bkgd_objects=0,
        augment=False,
    )
    batch = collate_clips([dataset[0]])
    ids = batch.object_ids[0].tolist()
    parent = {ids[k]: ids[p] for k, p in enumerate(batch.parent_slot[0].tolist()) if p >= 0}
    assert parent == {2: 1, 3: 1}
    clip_idx, slot = batch.obj_valid.nonzero(as_tuple=True)
    found = gt_divisions(
        batch, clip_idx, slot, batch.prompt_frame[0], batch.targets[0].transpose(0, 1) > 0.5
    )
    assert found.frame.tolist() == [2]
    assert ids[int(found.mother[0])] == 1
    assert sorted(ids[int(d)] for d in found.daughters[0]) == [2, 3]


def record(division: float, score: float, ious: tuple[float, float, float]):
    masks = torch.zeros(1, 1, 3, 4, 4)
    masks[0, 0, 1, :2], masks[0, 0, 2, 2:] = 5.0, 5.0
    return masks, torch.tensor([[ious]]), torch.tensor([[score]]), torch.tensor([division])


def test_learned_division_needs_all_three_thresholds():
    config = DivisionConfig()
    daughters = learned_division(record(3.0, 3.0, (0.1, 0.9, 0.9)), config)
    assert daughters is not None and daughters.shape == (2, 4, 4)
    assert bool((daughters[0, :2] > 0).all()) and bool((daughters[1, 2:] > 0).all())
    assert learned_division(record(-3.0, 3.0, (0.1, 0.9, 0.9)), config) is None
    assert learned_division(record(3.0, -3.0, (0.1, 0.9, 0.9)), config) is None
    assert learned_division(record(3.0, 3.0, (0.9, 0.9, 0.5)), config) is None
    single = record(3.0, 3.0, (0.9, 0.9, 0.9))
    assert learned_division((single[0][:, :, :1], *single[1:]), config) is None


def test_division_mode_defaults_to_learned_only_with_a_head():
    assert resolve_mode(None, True) == "learned"
    assert resolve_mode(None, False) == "off"
    assert resolve_mode("split", True) == "split"
    for mode in ("learned", "learned+split"):
        with pytest.raises(ValueError, match="division head"):
            resolve_mode(mode, False)
    assert resolve_mode("learned+split", True) == "learned+split"
    with pytest.raises(ValueError, match="one of"):
        resolve_mode("auto", True)


def dividing_session(bias: float):
    model = head_model().eval()
    with torch.no_grad():
        division_head(model).score[-1].bias.fill_(bias)
    frames = np.random.default_rng(0).random((4, SIZE, SIZE)).astype(np.float32)
    frames[:, 20:40, 20:40] += 2
    session = TrackingSession(
        model, frames, division_config=DivisionConfig(div_presence_thresh=0.0, div_iou_thresh=0.0)
    )
    seeds = np.zeros((SIZE, SIZE), np.uint16)
    seeds[20:40, 20:40] = 1
    session.seed_from_labels(0, seeds)
    return session


def test_learned_division_makes_daughters_that_inherit_the_mothers_memory():
    session = dividing_session(bias=10.0)  # the head says "divides" everywhere
    results = list(session.propagate("forward"))
    assert results[1].divisions and results[1].divisions[0][0] == 1
    _, d1, d2 = results[1].divisions[0]
    lineage = session.lineage()
    assert lineage.tracks[d1].parent == 1 and lineage.tracks[d2].parent == 1
    assert lineage.tracks[1].end == 0
    for d in (d1, d2):
        outputs = session._objects[d].outputs  # the memory SAM 2 will attend to
        assert 0 in outputs[COND]  # the mother's conditioning frame
        assert outputs[COND][0] is not session._objects[1].outputs[COND][0]

    quiet = dividing_session(bias=-10.0)
    assert not any(r.divisions for r in quiet.propagate("forward"))
    assert quiet.object_ids == [1]
    off = dividing_session(bias=10.0)
    off.divisions = "off"
    assert not any(r.divisions for r in off.propagate("forward"))


def test_head_survives_full_and_lora_checkpoints(tmp_path):
    model = head_model(seed=3)
    with torch.no_grad():
        division_head(model).score[-1].bias.fill_(1.25)
    folder = save_model_checkpoint(model, tmp_path / "full")
    assert (folder / HEADS_FILE).is_file()
    loaded = load_model(str(folder), device="cpu").model
    for name, value in division_head(model).state_dict().items():
        assert torch.equal(division_head(loaded).state_dict()[name], value), name

    peft_model = apply_lora(loaded, ScratchConfig(lora_rank=2))
    with torch.no_grad():
        division_head(peft_model).score[-1].bias.fill_(-0.5)
    adapter = save_adapter_checkpoint(peft_model, tmp_path / "lora", str(folder))
    restored = load_model(str(adapter), device="cpu", merge_lora=False).model
    assert isinstance(restored, PeftModel)
    assert float(division_head(restored).score[-1].bias) == -0.5

    plain = load_model("tiny", device="cpu").model
    assert division_head(plain) is None

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / HEADS_FILE))
    tensors["mask_decoder.division_head.score.4.bias"] = torch.zeros(2)
    save_file(tensors, str(folder / HEADS_FILE))
    with pytest.raises(ModelSpecError, match=HEADS_FILE):
        load_model(str(folder), device="cpu")


def test_division_clips_are_drawn_at_the_configured_rate():
    labels = np.zeros((12, 32, 32), np.uint16)
    labels[:6, 4:20, 4:12] = 1  # divides on frame 6: clips starting 3, 4, 5 hold it
    labels[6:, 4:11, 4:12], labels[6:, 13:20, 4:12] = 2, 3
    labels[:, 24:30, 20:28] = 4
    lineage = Lineage.parse("1 0 5 0\n2 6 11 1\n3 6 11 1\n4 0 11 0\n")
    dataset = CTCClipDataset.from_arrays(
        labels.astype(np.float32), labels, lineage, num_frames=4, resolution=64
    )
    flags = dataset.division_clips()
    assert flags.tolist() == [start in (3, 4, 5) for start in range(9)]

    from napari_cellsam2.training.loop import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer._train_set, trainer.scratch = dataset, ScratchConfig(div_clip_fraction=0.6)
    trainer.net, trainer._order = head_model(), torch.Generator().manual_seed(0)
    draws = [i for _ in range(200) for i in trainer._division_sampler()]
    assert abs(np.mean(flags[draws]) - 0.6) < 0.05
    trainer.scratch = ScratchConfig(div_clip_fraction=0.0)
    assert trainer._division_sampler() is None
    trainer.scratch, trainer.net = ScratchConfig(div_clip_fraction=0.6), trained_like_model(SIZE)
    assert trainer._division_sampler() is None  # no head: plain shuffling
