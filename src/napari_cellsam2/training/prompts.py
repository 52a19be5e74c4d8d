"""Simulated user prompts for SAM 2 training: first prompts and iterative correction clicks.

A conditioning frame (the frame where an object is first prompted) gets what a user of the
tracker would give: a click inside the cell, a rough box around it, or a whole mask (probabilities
``scratch.prob_point`` / ``prob_box`` / ``prob_mask``, drawn per object). Clicks and boxes are then
refined by ``scratch.num_correction_pt_per_frame`` correction clicks sampled from the current
errors (:class:`ClickCorrector`), as SAM 2's own training does; so are 0-1 tracked frames per clip
(:func:`frames_to_correct`). Background objects (fake objects that teach
the model to answer "no object") always get one positive click in empty space.

Coordinates are model (canvas) pixels ``(x, y)`` = (column, row), exactly what the tracker hands to
``Sam2VideoInferenceSession.add_point_inputs``; a box is two points labelled 2 and 3, as there.
All randomness comes from one optional ``torch.Generator`` (CPU or on the data's device); draws
are made on the generator's device and moved, so CPU generators work with CUDA data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "KIND_BOX",
    "KIND_CLICK",
    "KIND_MASK",
    "ClickCorrector",
    "ObjectPrompts",
    "frames_to_correct",
    "jitter_boxes",
    "mask_boxes",
    "sample_pixels",
    "sample_prompts",
]

KIND_MASK, KIND_CLICK, KIND_BOX = 0, 1, 2
PAD_LABEL = -10  # SAM 2's "ignore this point" label
BOX_NOISE = 0.1  # box corner jitter, as a fraction of the box width / height


@dataclass
class ObjectPrompts:
    """The first prompt of each of M objects on its conditioning frame.

    ``kind`` selects which fields are read: ``KIND_CLICK`` uses point 0 of ``point_coords`` /
    ``point_labels`` (label 1 positive, 0 negative), ``KIND_BOX`` uses points 0 and 1 (labels 2, 3:
    top-left and bottom-right corner), ``KIND_MASK`` uses ``masks``.
    """

    kind: torch.Tensor  # (M,) long
    point_coords: torch.Tensor  # (M, 2, 2) float, (x, y) in model pixels
    point_labels: torch.Tensor  # (M, 2) int32, PAD_LABEL where unused
    masks: torch.Tensor  # (M, S, S) float {0, 1}; read only where kind == KIND_MASK

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @staticmethod
    def num_points(kind: int) -> int:
        """How many prompt points an object of this kind starts with (0 for masks)."""
        return {KIND_MASK: 0, KIND_CLICK: 1, KIND_BOX: 2}[kind]

    @classmethod
    def from_masks(cls, masks: torch.Tensor) -> ObjectPrompts:
        """Every object prompted with its mask (M, S, S)."""
        m = masks.shape[0]
        return cls(
            kind=torch.full((m,), KIND_MASK, dtype=torch.long, device=masks.device),
            point_coords=torch.zeros((m, 2, 2), device=masks.device),
            point_labels=torch.full((m, 2), PAD_LABEL, dtype=torch.int32, device=masks.device),
            masks=masks.float(),
        )

    @classmethod
    def from_clicks(cls, xy: torch.Tensor, labels: torch.Tensor | None = None) -> ObjectPrompts:
        """Every object prompted with one click ``xy`` (M, 2); labels default to positive."""
        m = xy.shape[0]
        labels = torch.ones(m, dtype=torch.int32) if labels is None else labels
        coords = torch.zeros((m, 2, 2), device=xy.device)
        coords[:, 0] = xy.float()
        point_labels = torch.full((m, 2), PAD_LABEL, dtype=torch.int32, device=xy.device)
        point_labels[:, 0] = labels.to(device=xy.device, dtype=torch.int32)
        return cls(
            kind=torch.full((m,), KIND_CLICK, dtype=torch.long, device=xy.device),
            point_coords=coords,
            point_labels=point_labels,
            masks=torch.zeros((m, 0, 0), device=xy.device),  # no mask prompts
        )

    def subset(self, index: torch.Tensor) -> ObjectPrompts:
        return ObjectPrompts(
            self.kind[index], self.point_coords[index], self.point_labels[index], self.masks[index]
        )


def check_prompt_mix(prob_point: float, prob_box: float, prob_mask: float) -> None:
    """The config's prompt probabilities: non-negative, not all zero."""
    if min(prob_point, prob_box, prob_mask) < 0 or prob_point + prob_box + prob_mask <= 0:
        raise ValueError(
            "scratch.prob_point/prob_box/prob_mask must be >= 0 with a positive sum, got "
            f"{prob_point}, {prob_box}, {prob_mask}"
        )


def check_corrections(num_steps: int, prob_from_gt: float, num_frames_to_correct: int = 1) -> None:
    """The config's correction-click settings."""
    if num_steps < 0:
        raise ValueError(f"scratch.num_correction_pt_per_frame must be >= 0, got {num_steps}")
    if not 0.0 <= prob_from_gt <= 1.0:
        raise ValueError(f"scratch.prob_correction_from_gt must be in [0, 1], got {prob_from_gt}")
    if num_frames_to_correct < 1:
        raise ValueError(
            f"scratch.num_frames_to_correct must be >= 1 (the prompt frame), got "
            f"{num_frames_to_correct}"
        )


def frames_to_correct(
    first: int,
    num_frames: int,
    num_to_correct: int,
    rand: bool,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Tracked frames of a clip that get correction clicks besides its first prompt frame.

    As SAM 2's trainer (``num_frames_to_correct``, ``rand_frames_to_correct``): ``num_to_correct``
    frames in all, or a uniform 1..``num_to_correct`` when ``rand``; the first prompt frame
    ``first`` is always one of them (it is corrected as a conditioning frame), the others are
    drawn without replacement from the frames after it.
    """
    gen_device = generator.device if generator is not None else "cpu"
    count = num_to_correct
    if rand and num_to_correct > 1:
        count = int(
            torch.randint(1, num_to_correct + 1, (1,), generator=generator, device=gen_device)
        )
    later = num_frames - 1 - first
    extra = min(count - 1, later)
    if extra <= 0:
        return []
    order = torch.randperm(later, generator=generator, device=gen_device)[:extra]
    return sorted(first + 1 + int(i) for i in order)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device):
    """Uniform [0, 1) draws from ``generator`` (on its own device), moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def sample_pixels(
    region: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel drawn uniformly from each of m boolean regions (m, H, W).

    Returns ``(xy (m, 2) float, ok (m,) bool)``; ``ok`` is False (and xy is 0) for an empty region.
    Works on any device without a host round trip (cumulative counts + binary search).
    """
    m, _, w = region.shape
    counts = region.flatten(1).to(torch.int32).cumsum(1, dtype=torch.int32)
    total = counts[:, -1]
    rank = (_rand((m,), generator, region.device) * total).long()
    rank = torch.minimum(rank, (total - 1).clamp(min=0).long())
    index = torch.searchsorted(counts, (rank + 1).to(torch.int32)[:, None]).squeeze(1)
    ok = total > 0
    index = torch.where(ok, index.clamp(max=counts.shape[1] - 1), 0)
    xy = torch.stack([index % w, index // w], dim=1).float()
    return xy, ok


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``[x0, y0, x1, y1]`` (inclusive pixel indices) of m non-empty masks (m, H, W)."""
    _, h, w = masks.shape
    cols, rows = masks.any(1), masks.any(2)
    x0 = cols.int().argmax(1)
    x1 = w - 1 - cols.flip(1).int().argmax(1)
    y0 = rows.int().argmax(1)
    y1 = h - 1 - rows.flip(1).int().argmax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def jitter_boxes(
    boxes: torch.Tensor,
    size: int,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Move each corner by up to ``BOX_NOISE`` of the box width/height (uniform), clip to the
    canvas, or to the image on it: ``valid`` (M, S, S), each object's image region (the
    letterbox's top-left rectangle). The tracker refuses boxes outside the image, so training
    must not show the model corners in the padding.

    A user's box is never tight; SAM 2 trains with the same kind of noise.
    """
    wh = (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)
    noise = (2 * _rand(tuple(boxes.shape), generator, boxes.device) - 1) * BOX_NOISE * wh
    out = (boxes + noise).clamp(0, size - 1)
    if valid is not None:
        x_max = valid.any(-2).sum(-1) - 1  # (M,): the last image column
        y_max = valid.any(-1).sum(-1) - 1
        out = torch.minimum(out, torch.stack([x_max, y_max, x_max, y_max], 1).to(out))
    lo = torch.minimum(out[:, :2], out[:, 2:])
    hi = torch.maximum(out[:, :2], out[:, 2:])
    return torch.cat([lo, hi], dim=1)


def sample_prompts(
    first_masks: torch.Tensor,
    is_background: torch.Tensor,
    empty_space: torch.Tensor,
    prob_point: float,
    prob_box: float,
    prob_mask: float,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[ObjectPrompts, torch.Tensor]:
    """First prompts of M objects from their masks on their conditioning frames.

    ``first_masks`` (M, S, S) bool: each object's target on its prompt frame (must be non-empty for
    cells). ``empty_space`` (M, S, S) bool: where a background object may be clicked (inside the
    image, outside every cell of that frame). ``valid`` (M, S, S) bool: the image on the canvas,
    which boxes stay inside. Returns the prompts and ``ok`` (M,): False for a background object
    that found no empty space (the caller drops it).
    """
    check_prompt_mix(prob_point, prob_box, prob_mask)
    probs = torch.tensor([prob_point, prob_box, prob_mask], dtype=torch.float64)
    m, size, _ = first_masks.shape
    device = first_masks.device
    empty_cells = ~first_masks.flatten(1).any(1) & ~is_background
    if empty_cells.any():
        bad = empty_cells.nonzero().flatten().tolist()
        raise ValueError(f"objects {bad} have an empty mask on their prompt frame; cannot prompt")
    cum = (probs.cumsum(0) / probs.sum()).to(device=device, dtype=torch.float32)
    u = _rand((m,), generator, device)
    kind = torch.where(u < cum[0], KIND_CLICK, torch.where(u < cum[1], KIND_BOX, KIND_MASK))
    kind = torch.where(is_background, KIND_CLICK, kind).long()

    click_region = torch.where(is_background[:, None, None], empty_space, first_masks)
    clicks, ok = sample_pixels(click_region, generator)
    boxes = torch.zeros((m, 4), device=device)
    if m:
        boxes = jitter_boxes(
            mask_boxes(first_masks | is_background[:, None, None]), size, generator, valid
        )
    is_box = (kind == KIND_BOX)[:, None]
    coords = torch.where(
        is_box[:, :, None], boxes.view(m, 2, 2), torch.stack([clicks, torch.zeros_like(clicks)], 1)
    )
    labels = torch.where(
        is_box,
        torch.tensor([2, 3], dtype=torch.int32, device=device),
        torch.tensor([1, PAD_LABEL], dtype=torch.int32, device=device),
    )
    labels = torch.where((kind == KIND_MASK)[:, None], PAD_LABEL, labels).to(torch.int32)
    prompts = ObjectPrompts(kind, coords, labels, first_masks.float())
    return prompts, ok


class ClickCorrector:
    """Correction clicks from the errors of the current prediction, as SAM 2 trains.

    Each call adds one click per object, drawn uniformly from the error pixels inside the image
    (a missed pixel gives a positive click, a wrongly included pixel a negative one); with
    probability ``prob_from_gt`` the click is drawn from the target instead (positive). When the
    prediction is already right, a negative click lands on the background (or, for a cell that
    fills the whole image, a positive one inside it), so every object gets one click per step and
    objects can stay batched.
    """

    def __init__(
        self,
        targets: torch.Tensor,
        allowed: torch.Tensor,
        num_steps: int,
        prob_from_gt: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        """``targets`` (M, T, S, S) bool; ``allowed`` (M, S, S) bool: the image area per object."""
        check_corrections(num_steps, prob_from_gt)
        self.targets = targets
        self.allowed = allowed
        self.num_steps = num_steps
        self.prob_from_gt = prob_from_gt
        self.generator = generator

    def __call__(
        self, objects: torch.Tensor, frame: int, predicted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next click for ``objects`` (m,) on ``frame`` given their predicted masks (m, S, S) bool.

        Returns ``(coords (m, 1, 2), labels (m, 1) int32)``.
        """
        gt = self.targets[objects, frame]
        allowed = self.allowed[objects]
        errors = (predicted ^ gt) & allowed
        has_gt = gt.flatten(1).any(1)
        from_gt = (_rand((len(objects),), self.generator, gt.device) < self.prob_from_gt) & has_gt
        region = torch.where(from_gt[:, None, None], gt, errors)
        background = allowed & ~gt
        fallback = torch.where(background.flatten(1).any(1)[:, None, None], background, gt)
        none_left = ~region.flatten(1).any(1)
        region = torch.where(none_left[:, None, None], fallback, region)
        xy, _ = sample_pixels(region, self.generator)
        ix = xy.long()
        labels = gt[torch.arange(len(objects), device=gt.device), ix[:, 1], ix[:, 0]]
        return xy[:, None], labels.to(torch.int32)[:, None]
