"""transformers' own SAM 2 video propagation, the reference several tests compare against."""

from __future__ import annotations

import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel


def track_point(
    model: Sam2VideoModel,
    video: torch.Tensor,
    xy: tuple[float, float],
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Prompt frame 0 with one positive point (model pixels) and propagate with
    ``propagate_in_video_iterator``; returns (T, h, w) low-resolution mask logits."""
    size = video.shape[-1]
    session = Sam2VideoInferenceSession(
        video=video,
        video_height=height or size,
        video_width=width or size,
        dtype=torch.float32,
    )
    idx = session.obj_id_to_idx(1)
    points = torch.tensor([[[list(xy)]]], dtype=torch.float32)
    labels = torch.tensor([[[1]]], dtype=torch.int32)
    session.add_point_inputs(idx, 0, {"point_coords": points, "point_labels": labels})
    session.obj_with_new_inputs = [1]
    with torch.inference_mode():
        model(inference_session=session, frame_idx=0)
        out = {o.frame_idx: o.pred_masks for o in model.propagate_in_video_iterator(session, 0)}
    return torch.stack([out[t][0, 0] for t in range(video.shape[0])])
