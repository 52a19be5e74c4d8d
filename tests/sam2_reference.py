"""transformers' own SAM 2 video propagation, the reference several tests compare against."""

from __future__ import annotations

import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

from napari_cellsam2.model.tiny import build_random_model, tiny_config


def trained_like_model(size: int, seed: int = 0) -> Sam2VideoModel:
    """Tiny random SAM 2 that looks trained where it matters to reference comparisons.

    A random initialisation gives mask logits of ~1e-3 (every pixel at p = 0.5, thresholds decided
    by noise); a trained SAM 2 gives logits of several units, so the hypernetwork output layers are
    scaled x1000. Learned embeddings that start at zero (temporal encodings of memories, no-memory
    and no-object embeddings, occlusion embedding, memory-fuser layer scales) are randomised, or
    an engine that forgot one of them would still match transformers.
    """
    model = build_random_model(tiny_config(size), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(1000.0)
        for name, p in model.named_parameters():
            if p.ndim and not name.endswith("bias") and not p.any():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def track_point(
    model: Sam2VideoModel,
    video: torch.Tensor,
    xy: tuple[float, float],
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Prompt frame 0 with one positive point (model pixels) and propagate with
    ``propagate_in_video_iterator``; returns (T, h, w) low-resolution mask logits."""
    return track_points(model, video, [xy], height, width)[0]


def track_points(
    model: Sam2VideoModel,
    video: torch.Tensor,
    points: list[tuple[float, float]],
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """One object per positive point (model pixels) on frame 0, propagated with
    ``propagate_in_video_iterator``; returns (N, T, h, w) low-resolution mask logits."""
    size = video.shape[-1]
    session = Sam2VideoInferenceSession(
        video=video,
        video_height=height or size,
        video_width=width or size,
        dtype=torch.float32,
    )
    for obj_id, xy in enumerate(points, start=1):
        coords = torch.tensor([[[list(xy)]]], dtype=torch.float32)
        labels = torch.tensor([[[1]]], dtype=torch.int32)
        inputs = {"point_coords": coords, "point_labels": labels}
        session.add_point_inputs(session.obj_id_to_idx(obj_id), 0, inputs)
    session.obj_with_new_inputs = list(range(1, len(points) + 1))
    with torch.inference_mode():
        model(inference_session=session, frame_idx=0)
        out = {o.frame_idx: o.pred_masks for o in model.propagate_in_video_iterator(session, 0)}
    return torch.stack([out[t][:, 0] for t in range(video.shape[0])], dim=1)


def backprop_reaches(model, batch, head: torch.nn.Module) -> dict[str, float]:
    """One training loss of ``batch`` with GT mask prompts (train mode), back-propagated;
    asserts that every parameter of ``head`` gets a non-zero gradient; returns the loss parts."""
    from napari_cellsam2.training.config import ScratchConfig
    from napari_cellsam2.training.objective import clip_loss

    model.train()
    loss, parts = clip_loss(
        model,
        batch,
        ScratchConfig(prob_point=0.0, prob_box=0.0, prob_mask=1.0),
        torch.Generator().manual_seed(0),
    )
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    return parts
