"""Training must improve what tracking uses: the memory path and the output tracking keeps.

A training loss can fall while tracking gets worse: the loss supervises the best multimask
output, tracking keeps the output with the highest *predicted* IoU. These tests overfit one clip
and then measure tracking in eval mode, as the user gets it.

Measured at 1e-3, seed 0 (tiny model, 64 px, 300 Adam steps, one torch thread, ~50 s;
``scripts/iou_loss_probe.py --lr 1e-3``):

| IoU loss | tracked-frame IoU (train / eval mode) |
|---|---|
| cross-entropy on the IoU logit, all outputs (ours) | 0.98 / 0.98 |
| cross-entropy on the IoU logit, best output only | 0.97 / 0.97 |
| SAM 2's L1 on the sigmoid IoU, best output only (the loss before issue 9) | 0.50 / 0.50 |
| SAM 2's L1 on the sigmoid IoU, all outputs | 0.04 / 0.04 (the best output fits: dice 0.01) |
| ours, memory features cut | 0.22 / 0.22 |

With L1 the IoU head saturates (its logits sink far below zero) and tracking keeps
whichever output the saturated head happens to rank first; see ``losses.iou_loss``.

The tests run at 3e-4 (``LR``): at 1e-3 the overfits were bistable, seeds 1 and 2 stalled at
0.50 and 0.26 and a float-level reordering of the loss sums flipped seed 0
(``scripts/overfit_seed_sweep.py --lr 1e-3``); at 3e-4 seeds 0-3 reach 0.99 (memory path) and
0.97-0.99 (clicks, session IoU) and the memory cut stays at 0.22-0.24 (docs/results/engine.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_cellsam2.training import forward
from napari_cellsam2.training.config import ScratchConfig
from napari_cellsam2.training.forward import run_clip
from napari_cellsam2.training.objective import clip_loss
from napari_cellsam2.training.prompts import ObjectPrompts
from test_training_forward import make_batch, tiny_model

STEPS, LR = 300, 3e-4  # the overfits' Adam recipe (robust across seeds: module docstring)


def _tracked_iou(model, batch, train_mode: bool) -> float:
    """Mean IoU on frames 1.. of the masks the tracker outputs (kept output, gated), from the
    GT masks on frame 0."""
    model.train(train_mode)
    targets = batch.targets[0].transpose(0, 1) > 0.5  # (M, T, S, S)
    num, size = targets.shape[0], targets.shape[-1]
    zeros = torch.zeros(num, dtype=torch.long)
    with torch.no_grad():
        out = run_clip(
            model, batch.pixel_values, zeros, zeros, ObjectPrompts.from_masks(targets[:, 0].float())
        )
    masks = F.interpolate(out.pred_masks.float(), size=(size, size), mode="bilinear") > 0
    inter = (masks & targets).flatten(2).sum(-1).float()
    union = (masks | targets).flatten(2).sum(-1).float()
    return float((inter / union.clamp(min=1))[:, 1:].mean())


def _overfit_from_masks(
    steps: int = STEPS, seed: int = 0, lr: float = LR, **overrides
) -> tuple[float, float]:
    """Overfit a 4-frame clip whose cells are GT mask prompts on frame 0: frames 1-3 can only be
    learned through the memory. Returns the tracked-frame IoU in train and eval mode.
    ``seed``: initial weights and memory-attention dropout (scripts/overfit_seed_sweep.py);
    ``overrides``: ScratchConfig fields (scripts/iou_loss_probe.py varies the IoU supervision)."""
    torch.manual_seed(seed)  # memory-attention dropout
    model = tiny_model(64, seed=seed)
    batch = make_batch(frames=4)
    scratch = ScratchConfig(
        prob_point=0.0, prob_box=0.0, prob_mask=1.0, num_correction_pt_per_frame=0, **overrides
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        loss, _ = clip_loss(model, batch, scratch, torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return _tracked_iou(model, batch, True), _tracked_iou(model, batch, False)


def test_tracked_frames_are_learned_through_memory():
    train_iou, eval_iou = _overfit_from_masks()
    assert train_iou >= 0.9 and eval_iou >= 0.9, (train_iou, eval_iou)


def test_without_memory_the_tracked_frames_are_not_learned(monkeypatch):
    """The same overfit with the memory cut (memory attention skipped): the tracked objects
    cannot be told apart, so the bar above is out of reach - the first test measures memory."""

    def no_memory(model, group, frame, features, position, horizon):
        _, m, channels = features.shape
        return features.permute(1, 2, 0).reshape(m, channels, *model.backbone_feature_sizes[-1])

    monkeypatch.setattr(forward, "_memory_conditioned", no_memory)
    train_iou, eval_iou = _overfit_from_masks()
    assert train_iou < 0.5 and eval_iou < 0.5, (train_iou, eval_iou)


def _click_movie():
    """A 4-frame 64 px movie of three moving cells (bright, dark, dim) and its GT labels."""
    rng = np.random.default_rng(0)
    movie = rng.normal(1000, 150, (4, 64, 64)).clip(0).astype(np.uint16)
    gt = np.zeros((4, 64, 64), np.uint16)
    for t in range(4):
        gt[t, 8 + t : 24 + t, 8 + t : 24 + t] = 1
        gt[t, 40 - t : 56 - t, 32:48] = 2
        gt[t, 14:24, 40 - t : 50 - t] = 3
    movie[gt == 1] += 2500
    movie[gt == 2] //= 4
    movie[gt == 3] += 1500
    return movie, gt


def _session_iou_after_click_overfit(
    steps: int = STEPS, seed: int = 0, lr: float = LR, **overrides
) -> np.ndarray:
    """Fine-tune on one clip prompted with clicks, then track it with the real session from one
    click per cell; returns the (frame, cell) IoUs."""
    from napari_cellsam2.model.preprocess import preprocess_frames
    from napari_cellsam2.tracking import TrackingSession
    from napari_cellsam2.training.data import ClipBatch

    movie, gt = _click_movie()
    video, box = preprocess_frames(movie, 64)
    targets = torch.stack(
        [torch.stack([box.mask_to_model(gt[t] == k) for k in (1, 2, 3)]) for t in range(4)]
    )
    batch = ClipBatch(
        pixel_values=video[None],
        targets=targets[None].float(),
        obj_valid=torch.ones(1, 3, dtype=torch.bool),
        prompt_frame=torch.zeros(1, 3, dtype=torch.long),
        is_background=torch.zeros(1, 3, dtype=torch.bool),
        valid_region=torch.ones(1, 64, 64, dtype=torch.bool),
        foreground=torch.zeros(1, 64, 64, dtype=torch.bool),  # no cell beyond the targets
        object_ids=torch.arange(1, 4)[None],
        parent_slot=torch.full((1, 3), -1, dtype=torch.long),
        centres=torch.zeros(1, 4, 16, 16),
    )
    torch.manual_seed(seed)
    model = tiny_model(64, seed=seed)
    scratch = ScratchConfig(
        prob_point=1.0, prob_box=0.0, prob_mask=0.0, num_correction_pt_per_frame=1, **overrides
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        loss, _ = clip_loss(model, batch, scratch, torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    session = TrackingSession(model, movie)
    for k in (1, 2, 3):
        ys, xs = np.nonzero(gt[0] == k)
        session.add_points(k, 0, [(float(xs.mean()), float(ys.mean()))])
    list(session.propagate("forward"))
    got = session.labels[:, None] == np.arange(1, 4)[None, :, None, None]
    want = gt[:, None] == np.arange(1, 4)[None, :, None, None]
    return (got & want).sum((2, 3)) / np.maximum((got | want).sum((2, 3)), 1)


def test_overfit_from_clicks_improves_the_tracking_session():
    """Fine-tune on one clip prompted with clicks, then track it with the real session from one
    click per cell: the user's IoU must rise to >= 0.85. Measured at 3e-4: 0.97-0.99 over seeds
    0-3; at 1e-3 (seed 0) 0.97 with this objective and 0.39 with the loss before issue 9 (L1 IoU
    loss on the best output only: the session keeps wrong outputs on tracked frames)."""
    iou = _session_iou_after_click_overfit()
    assert iou.mean() >= 0.85, iou
