"""CellSAM2's cell-centre heatmap head: its targets, its loss, its peaks as point prompts, and
its place in checkpoints (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellsam2.model.checkpoint import save_model_checkpoint
from napari_cellsam2.model.heads import attach_centre_head, centre_head
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.model.preprocess import Letterbox
from napari_cellsam2.tracking import detect
from napari_cellsam2.tracking.detect import heatmap_points
from napari_cellsam2.tracking.detect_config import DetectConfig
from napari_cellsam2.training.centres import centre_focal_loss, centre_heatmap
from napari_cellsam2.training.data import CTCClipDataset, collate_clips
from sam2_reference import backprop_reaches, trained_like_model


def two_cells() -> np.ndarray:
    labels = np.zeros((32, 16), np.uint16)  # a tall frame: the canvas is padded on the right
    labels[2:10, 2:8] = 1  # centroid (x 4.5, y 5.5)
    labels[20:30, 6:14] = 2  # centroid (x 9.5, y 24.5)
    return labels


def test_targets_peak_at_every_cell_centre_on_the_model_canvas():
    box = Letterbox(32, 16, 64)  # x2 onto the canvas; head grid = canvas / 4
    heat = centre_heatmap(two_cells(), box)
    assert heat.shape == (16, 16) and heat.max() == 1.0
    peaks = sorted(zip(*np.nonzero(heat == 1.0), strict=True))
    # canvas (x, y) = (p + 0.5) * 2 - 0.5, grid = (canvas + 0.5) / 4 - 0.5 = p / 2 - 0.25
    assert peaks == [(round(5.5 / 2 - 0.25), round(4.5 / 2 - 0.25)), (12, round(9.5 / 2 - 0.25))]
    assert heat[:, 9:].max() < 0.01  # nothing in the padding
    assert not centre_heatmap(np.zeros((32, 16), np.uint16), box).any()


def test_focal_loss_rewards_peaks_in_the_right_place():
    target = torch.from_numpy(centre_heatmap(two_cells(), Letterbox(32, 16, 64)))[None]
    right = torch.where(target == 1, 8.0, -8.0)
    shifted = torch.roll(right, shifts=3, dims=2)
    assert float(centre_focal_loss(right, target)) < 0.01
    assert float(centre_focal_loss(shifted, target)) > 10 * float(centre_focal_loss(right, target))
    assert float(centre_focal_loss(torch.full_like(target, -4.6), target)) > 1.0


def test_the_head_learns_from_every_clip_frame():
    labels = np.zeros((4, 32, 32), np.uint16)
    labels[:, 4:14, 4:12] = 1
    labels[:, 20:28, 18:28] = 2
    dataset = CTCClipDataset.from_arrays(
        labels.astype(np.float32) * 50,
        labels,
        num_frames=4,
        resolution=64,
        max_num_objects=1,  # the clip tracks one cell; the heatmap still sees both
        max_num_bkgd_objects=0,
        augment=False,
    )
    batch = collate_clips([dataset[0]])
    assert batch.targets.shape[2] == 1
    assert int((batch.centres[0, 0] == 1).sum()) == 2
    model = trained_like_model(64)
    parts = backprop_reaches(model, batch, attach_centre_head(model))
    assert parts["heatmap"] > 0


def forced_heatmap(model, logits: torch.Tensor) -> None:
    head = centre_head(model)
    head.forward = lambda features, sizes: logits[None]


def test_peaks_become_clicks_on_the_original_frame(monkeypatch):
    model = trained_like_model(64).eval()
    attach_centre_head(model)
    logits = torch.full((16, 16), -6.0)
    logits[3, 2], logits[12, 5] = 3.0, 1.0  # two peaks, the first stronger
    logits[12, 6] = 0.5  # a shoulder of the second, not a local maximum
    logits[8, 12] = 4.0  # in the padding (x > 8 grid cells for a 32 x 16 frame)
    logits[0, 0] = -3.0  # a local maximum below the threshold (sigmoid -3 = 0.05 < 0.1)
    forced_heatmap(model, logits)
    box = Letterbox(32, 16, 64)
    points = heatmap_points(model, [], box, min_score=0.1)
    expected = box.points_to_original(np.array([[2, 3], [5, 12]]) * 4 + 1.5)
    np.testing.assert_allclose(points, expected)
    assert len(heatmap_points(model, [], box, min_score=0.8)) == 1

    seen = []
    monkeypatch.setattr(detect, "heatmap_points", lambda *a: seen.append("heatmap") or points)
    monkeypatch.setattr(detect, "grid_points", lambda *a: seen.append("grid") or points)
    features = model.get_image_features(torch.zeros(1, 3, 64, 64), return_dict=True)
    for method in ("auto", "grid", "heatmap"):
        detect.detect_cells(
            model, list(features.fpn_hidden_states), box, DetectConfig(method=method)
        )
    assert seen == ["heatmap", "grid", "heatmap"]
    plain = trained_like_model(64).eval()
    with pytest.raises(ValueError, match="heatmap head"):
        heatmap_points(plain, [], box, 0.1)


def test_the_head_survives_a_checkpoint(tmp_path):
    model = trained_like_model(64)
    with torch.no_grad():
        attach_centre_head(model, seed=5).net[-1].bias.fill_(0.75)
    folder = save_model_checkpoint(model, tmp_path / "ckpt")
    loaded = load_model(str(folder), device="cpu").model
    for name, value in centre_head(model).state_dict().items():
        assert torch.equal(centre_head(loaded).state_dict()[name], value), name
