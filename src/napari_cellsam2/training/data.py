"""Training clips for SAM 2 fine-tuning from CTC ground truth, and their batches.

A clip is ``num_frames`` consecutive frames (1 = segmentation mode) of one annotated sequence;
every start frame of every sequence is one sample. Frames are preprocessed exactly as inference
does (:func:`napari_cellsam2.model.preprocess.preprocess_frame`: per-frame intensity scaling,
letterbox into the square canvas, ImageNet normalisation), and targets are the GT masks mapped
with the same letterbox (``mask > 0.5`` after the bilinear resize), so pixels and targets align.

Objects of a clip. Up to ``max_num_objects`` cells of the clip's first frame, chosen at random
(seeded), each *with its whole in-clip family*: divisions follow the CellSAM2-cleaned lineage
(:meth:`Lineage.cleaned`), and the daughters (and granddaughters) of a chosen cell that appear in
the clip are separate objects. Daughters count towards ``max_num_objects`` (a hard cap on real
objects, so memory per step is bounded) and a family is never split: a family that does not fit
the remaining budget is skipped for a smaller one, so a mother is never tracked without her
daughters. Divisions: the mother's target is empty after her last frame (the labels simply do
not contain her), or with ``mother_covers_daughters`` it is the union of her in-clip descendants
from then on (what the tracker's ``split`` rule follows: a mask that falls apart into the two
daughters, so training stops teaching that mask to vanish); a daughter is a new object prompted
on its first frame in the clip
(``prompt_frame``), with an empty target before it. An object whose target is empty on its
prompt frame after resizing (a cell of a few pixels) is dropped. Then 0..``max_num_bkgd_objects``
background objects (random count) follow: fake objects with empty targets on every frame,
``prompt_frame`` 0, ``object_ids`` 0, to be prompted in empty space (see ``valid_region``).
Slot order: cells by (prompt_frame, track label), then background objects.

Randomness (subset, background count, augmentations) comes from a generator seeded with
``(seed, epoch, index)``, so runs are reproducible; ``set_epoch`` changes it per epoch. With
``augment=False`` clips are unaugmented and identical in every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..ctc import CTCFormatError, Lineage
from ..ctc.sequence import find_sequence_folders, open_sequence
from ..model.preprocess import IntensityNorm, Letterbox, preprocess_frame
from .augment import (
    AugmentConfig,
    apply_geometric,
    apply_intensity,
    sample_geometric,
    sample_intensity,
)
from .centres import centre_heatmap
from .tracking_validation import ValidationMovie

__all__ = ["CTCClipDataset", "ClipBatch", "ClipSample", "available_splits", "collate_clips"]


@dataclass
class ClipSample:
    """One clip: the fields of :class:`ClipBatch` without the batch dimension."""

    pixel_values: torch.Tensor  # (T, 3, S, S) float32
    targets: torch.Tensor  # (T, N, S, S) bool (compact for worker transfer; the batch is float)
    prompt_frame: torch.Tensor  # (N,) long
    is_background: torch.Tensor  # (N,) bool
    valid_region: torch.Tensor  # (S, S) bool
    foreground: torch.Tensor  # (S, S) bool: every labelled cell of frame 0, chosen or not
    object_ids: torch.Tensor  # (N,) long
    parent_slot: torch.Tensor  # (N,) long: the mother's slot in the clip, -1 for none
    centres: torch.Tensor  # (T, S/4, S/4) float: every cell's centre (.centres)

    @property
    def num_objects(self) -> int:
        return int(self.targets.shape[1])


@dataclass
class ClipBatch:
    """Clips on the model canvas; objects padded to the clip with the most (see ``obj_valid``)."""

    pixel_values: torch.Tensor  # (B, T, 3, S, S) float32
    targets: torch.Tensor  # (B, T, N, S, S) float {0,1}
    obj_valid: torch.Tensor  # (B, N) bool
    prompt_frame: torch.Tensor  # (B, N) long
    is_background: torch.Tensor  # (B, N) bool
    valid_region: torch.Tensor  # (B, S, S) bool
    # (B, S, S) bool: every labelled cell of frame 0, chosen or not: a background object's
    # click (frame 0) must land outside all of them, not only outside the chosen ones
    foreground: torch.Tensor
    object_ids: torch.Tensor  # (B, N) long
    parent_slot: torch.Tensor  # (B, N) long: the mother's slot in the same clip, -1 for none
    centres: torch.Tensor  # (B, T, S/4, S/4) float: every cell's centre (.centres)

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def pin_memory(self) -> ClipBatch:
        """Used by ``DataLoader(pin_memory=True)`` for faster host-to-GPU copies."""
        return ClipBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    @property
    def present(self) -> torch.Tensor:
        """(B, T, N) bool: the object has target pixels on that frame."""
        return self.targets.flatten(3).any(-1)


def collate_clips(samples: list[ClipSample]) -> ClipBatch:
    """Stack clips, padding the object dimension with invalid, empty slots."""
    if not samples:
        raise ValueError("collate_clips: empty list of samples")
    first = samples[0]
    t, _, s, _ = first.pixel_values.shape
    for sample in samples[1:]:
        if sample.pixel_values.shape != first.pixel_values.shape:
            raise ValueError(
                "collate_clips: clips differ in shape "
                f"{tuple(sample.pixel_values.shape)} vs {tuple(first.pixel_values.shape)}"
            )
    b, n = len(samples), max(sample.num_objects for sample in samples)
    targets = torch.zeros((b, t, n, s, s), dtype=torch.float32)
    obj_valid = torch.zeros((b, n), dtype=torch.bool)
    prompt_frame = torch.zeros((b, n), dtype=torch.long)
    is_background = torch.zeros((b, n), dtype=torch.bool)
    object_ids = torch.zeros((b, n), dtype=torch.long)
    parent_slot = torch.full((b, n), -1, dtype=torch.long)
    for i, sample in enumerate(samples):
        k = sample.num_objects
        targets[i, :, :k] = sample.targets
        obj_valid[i, :k] = True
        prompt_frame[i, :k] = sample.prompt_frame
        is_background[i, :k] = sample.is_background
        object_ids[i, :k] = sample.object_ids
        parent_slot[i, :k] = sample.parent_slot
    return ClipBatch(
        pixel_values=torch.stack([sample.pixel_values for sample in samples]),
        targets=targets,
        obj_valid=obj_valid,
        prompt_frame=prompt_frame,
        is_background=is_background,
        valid_region=torch.stack([sample.valid_region for sample in samples]),
        foreground=torch.stack([sample.foreground for sample in samples]),
        object_ids=object_ids,
        parent_slot=parent_slot,
        centres=torch.stack([sample.centres for sample in samples]),
    )


# ---- sources ------------------------------------------------------------------------------------
@dataclass
class _Source:
    """One annotated sequence: per-frame indexable images and labels plus division links."""

    name: str
    images: Any  # (T, H, W) or (T, H, W, C); ``images[t]`` reads one frame
    labels: Any  # (T, H, W) integer
    parents: dict[int, int]  # daughter -> mother, after CellSAM2's lineage cleaning
    length: int
    cells: int = 0  # annotated tracks
    annotated_frames: int = 0  # frames holding at least one annotated cell
    division_starts: tuple[int, ...] = ()  # positions where daughters (cleaned lineage) begin


def _division_starts(lineage: Lineage, position: Callable[[int], int]) -> tuple[int, ...]:
    """Frame positions on which a cleaned division's daughters begin."""
    cleaned = lineage.cleaned()
    return tuple(sorted({position(cleaned.tracks[d].begin) for d in cleaned.parents}))


def _annotation_counts(lineage: Lineage) -> dict[str, int]:
    """How many cells (tracks) are annotated, and on how many frames, from the lineage (which
    is validated against the masks, so no pass over the frames is needed)."""
    frames = set()
    for track in lineage:
        frames.update(range(track.begin, track.end + 1))
    return {"cells": len(lineage), "annotated_frames": len(frames)}


def _sequence_source(folder: Path, data_dir: Path, check: bool) -> _Source:
    seq = open_sequence(folder)
    if seq.images is None:
        raise CTCFormatError(folder, "image folder is missing (training needs images)")
    gt_dir = seq.folder.parent / f"{seq.name}_GT"
    if seq.gt is None or seq.gt.tra is None:
        raise CTCFormatError(
            gt_dir,
            "no TRA data: training needs TRA ground truth (TRA/man_track###.tif + man_track.txt)",
        )
    tra = seq.gt.tra
    if tra.masks.indices != seq.images.indices:
        missing = sorted(set(seq.images.indices) ^ set(tra.masks.indices))
        raise CTCFormatError(
            tra.folder,
            f"TRA frames must match the image frames of {seq.folder.name}; frame {missing[0]} is "
            "in only one of them",
        )
    if len(tra.masks.frame_shape) != 2:
        raise CTCFormatError(
            tra.masks.files.paths[0], f"TRA masks must be 2D (Y, X), got {tra.masks.frame_shape}"
        )
    if tuple(seq.images.frame_shape[:2]) != tuple(tra.masks.frame_shape):
        raise CTCFormatError(
            tra.masks.files.paths[0],
            f"mask shape {tra.masks.frame_shape} differs from image shape "
            f"{seq.images.frame_shape} of {seq.images.files.paths[0]}",
        )
    if check:
        seq.images.check_all()
        tra.validate()
    return _Source(
        name=seq.folder.relative_to(data_dir).as_posix(),
        images=seq.images,
        labels=tra.masks,
        parents=tra.lineage.cleaned().parents,
        length=len(seq.images),
        division_starts=_division_starts(tra.lineage, tra.masks.indices.index),
        **_annotation_counts(tra.lineage),
    )


def _split_folders(data_dir: Path, split: str | None) -> list[Path]:
    if not data_dir.is_dir():
        raise CTCFormatError(data_dir, "training data folder (dataset.data_dir) is missing")
    found = find_sequence_folders(data_dir)
    if "" in found:  # a plain CTC root: its sequences serve as the training split
        if split not in (None, "", "train"):
            raise CTCFormatError(
                data_dir,
                f"split '{split}' not found: this is a plain CTC folder without "
                "train/val/test sub-folders (only the training split is available)",
            )
        return found[""]
    split = split or "train"
    if split not in found:
        raise CTCFormatError(
            data_dir / split, f"split '{split}' is missing (found: {', '.join(sorted(found))})"
        )
    if not found[split]:
        raise CTCFormatError(data_dir / split, f"split '{split}' has no sequences (01, 02, …)")
    return found[split]


def available_splits(data_dir: str | Path) -> list[str]:
    """Splits of ``data_dir`` that hold sequences (``["train"]`` for a plain CTC root).

    Lets a caller skip validation when there is no validation split instead of failing.
    """
    found = find_sequence_folders(data_dir)
    if "" in found:
        return ["train"]
    return [split for split, folders in found.items() if folders]


def _array_source(index: int, images, labels, lineage: Lineage | None) -> _Source:
    where = f"<in-memory sequence {index}>"
    if not hasattr(images, "shape"):
        images = np.asarray(images)  # lazy stacks (LazyFrames, dask) stay lazy: read per clip
    labels = np.asarray(labels)
    shape = tuple(images.shape)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
        raise ValueError(f"{where}: images must be (T, Y, X) or (T, Y, X, 3), got {shape}")
    if labels.ndim != 3 or labels.dtype.kind not in "ui":
        raise ValueError(
            f"{where}: labels must be an integer (T, Y, X) array, got {labels.dtype} {labels.shape}"
        )
    if labels.shape != shape[:3]:
        raise ValueError(f"{where}: labels {labels.shape} do not match images {shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{where}: labels contain negative values")
    if lineage is None:
        lineage = Lineage.from_labels(labels)
    lineage.validate(labels, source=where)
    return _Source(
        name=where,
        images=images,
        labels=labels,
        parents=lineage.cleaned().parents,
        length=shape[0],
        division_starts=_division_starts(lineage, int),
        **_annotation_counts(lineage),
    )


# ---- the dataset --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipOptions:
    """How clips are cut and prepared, whatever the data comes from (see the module docstring)."""

    num_frames: int = 4
    resolution: int = 512
    max_num_objects: int = 30
    max_num_bkgd_objects: int = 8
    augment: bool = True
    seed: int = 0
    mother_covers_daughters: bool = False
    norm: IntensityNorm = field(default_factory=IntensityNorm)
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name, low in (
            ("num_frames", 1),
            ("resolution", 1),
            ("max_num_objects", 1),
            ("max_num_bkgd_objects", 0),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def from_scratch(cls, scratch: Any, *, augment: bool | None = None) -> ClipOptions:
        """From the training config's ``scratch`` section; ``augment`` overrides it."""
        return cls(
            num_frames=scratch.num_frames,
            resolution=scratch.resolution,
            max_num_objects=scratch.max_num_objects,
            max_num_bkgd_objects=scratch.max_num_bkgd_objects,
            augment=scratch.augment if augment is None else augment,
            seed=scratch.seed,
            mother_covers_daughters=scratch.mother_covers_daughters,
        )


class CTCClipDataset(Dataset):
    """Every window of ``num_frames`` consecutive frames of every annotated sequence is one clip.

    Build it from a CTC dataset folder (``data_dir/{split}/CTC/01`` + ``01_GT``, or a plain CTC
    root holding ``01`` + ``01_GT``, used as the training split), from a config
    (:meth:`from_config`), or from in-memory arrays (:meth:`from_arrays`, the napari dock).
    Frames are read lazily per clip. ``check=True`` reads every frame and validates the lineage
    against the masks once at construction, so broken data fails before training starts.
    Call :meth:`set_epoch` each epoch for fresh (yet reproducible) augmentations and subsets.
    """

    def __init__(
        self, data_dir: str | Path, split: str | None = "train", *, check: bool = True, **options
    ) -> None:
        """``options``: the fields of :class:`ClipOptions` (e.g. ``num_frames=3``)."""
        data_dir = Path(data_dir)
        sources = [_sequence_source(f, data_dir, check) for f in _split_folders(data_dir, split)]
        where = f"{data_dir} (split '{split}')" if split else str(data_dir)
        self._setup(sources, where, ClipOptions(**options))

    @classmethod
    def from_arrays(
        cls,
        images: Any,
        labels: Any,
        lineage: Lineage | Sequence[Lineage | None] | None = None,
        **options,
    ) -> CTCClipDataset:
        """Clips from in-memory ``images`` (T, Y, X[, 3]) and ``labels`` (T, Y, X) + lineage.

        Pass lists for several sequences (``lineage`` a list too, or None). Without a lineage the
        labels are taken as tracks without divisions. ``options`` as in the constructor; the
        lineage is always validated against the labels (cheap in memory).
        """
        if isinstance(images, (list, tuple)):
            if not isinstance(labels, (list, tuple)) or len(labels) != len(images):
                raise ValueError("from_arrays: give as many label stacks as image stacks")
            lineages = [None] * len(images) if lineage is None else list(lineage)
            if len(lineages) != len(images):
                raise ValueError("from_arrays: give one lineage (or None) per sequence")
            triples = list(zip(images, labels, lineages, strict=True))
        else:
            triples = [(images, labels, lineage)]
        if not triples:
            raise ValueError("from_arrays: no sequences given")
        sources = [_array_source(i, *triple) for i, triple in enumerate(triples)]
        obj = cls.__new__(cls)
        obj._setup(sources, "<in-memory arrays>", ClipOptions(**options))
        return obj

    @classmethod
    def from_config(
        cls, cfg: Any, split: str | None = None, *, augment: bool | None = None, check: bool = True
    ) -> CTCClipDataset:
        """From a :class:`~napari_cellsam2.training.config.TrainConfig` (or its DictConfig).

        ``split`` defaults to ``dataset.train_split``; ``augment`` to ``scratch.augment`` (pass
        ``False`` for validation clips).
        """
        options = ClipOptions.from_scratch(cfg.scratch, augment=augment)
        split = cfg.dataset.train_split if split is None else split
        return cls(cfg.dataset.data_dir, split, check=check, **vars(options))

    def _setup(self, sources: list[_Source], where: str, options: ClipOptions) -> None:
        cells = sum(s.cells for s in sources)
        if not cells:
            frames = sum(s.length for s in sources)
            raise ValueError(
                f"nothing to fine-tune on in {where}: 0 annotated cells on 0 of {frames} frames; "
                f"training needs at least 1 annotated cell (tracked over {options.num_frames} "
                "consecutive frames for the configured clips)"
            )
        self.options = options
        self.epoch = 0
        self._sources = sources
        self.clips_per_sequence = {
            s.name: max(0, s.length - self.options.num_frames + 1) for s in sources
        }
        if not any(self.clips_per_sequence.values()):
            lengths = ", ".join(f"{s.name}: {s.length}" for s in sources)
            raise ValueError(
                f"no training clips in {where}: num_frames={options.num_frames} is longer "
                f"than every sequence (frames per sequence: {lengths}); lower scratch.num_frames"
            )
        self._offsets = np.cumsum([0, *self.clips_per_sequence.values()])

    def division_clips(self) -> np.ndarray:
        """(len,) bool: whether clip ``i`` holds a division (daughters begin after its first
        frame), so training can sample such clips more often (``scratch.div_clip_fraction``)."""
        span = self.options.num_frames
        flags = []
        for source in self._sources:
            starts = np.asarray(source.division_starts, dtype=np.int64)
            for start in range(self.clips_per_sequence[source.name]):
                flags.append(bool(((starts > start) & (starts < start + span)).any()))
        return np.asarray(flags, dtype=bool)

    def movies(self) -> list[ValidationMovie]:
        """Each annotated sequence as a whole movie with its GT, for validating on the tracking
        path (:mod:`.tracking_validation`); images stay lazy."""
        return [ValidationMovie(s.name, s.images, s.labels, dict(s.parents)) for s in self._sources]

    # ---- Dataset protocol -----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Reseed augmentations and object subsets; clip ``i`` of epoch ``e`` is reproducible.

        With DataLoader workers, call it before creating each epoch's iterator (workers copy the
        dataset when the iterator starts; not with ``persistent_workers=True``).
        """
        self.epoch = int(epoch)

    def describe(self) -> str:
        per = ", ".join(f"{name}: {n}" for name, n in self.clips_per_sequence.items())
        return (
            f"{len(self)} clips of {self.options.num_frames} frame(s) from "
            f"{len(self._sources)} sequence(s) ({per})"
        )

    def locate(self, index: int) -> tuple[str, int]:
        """(sequence name, start frame position) of clip ``index``."""
        source, start = self._locate(index)
        return source.name, start

    def _locate(self, index: int) -> tuple[_Source, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips")
        seq = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self._sources[seq], int(index - self._offsets[seq])

    def __getitem__(self, index: int) -> ClipSample:
        index = int(index)
        source, start = self._locate(index)
        # Without augmentation clips do not change between epochs (validation is comparable).
        rng = np.random.default_rng(
            [self.options.seed, self.epoch if self.options.augment else 0, index]
        )
        window = range(start, start + self.options.num_frames)
        images = np.stack([self.options.norm.apply(_hwc(source.images[t])) for t in window])
        labels = np.stack([np.asarray(source.labels[t]) for t in window])
        if self.options.augment:
            geometric = sample_geometric(rng, self.options.augment_config)
            images, labels = apply_geometric(images, labels, geometric)
            images = apply_intensity(
                images, sample_intensity(rng, self.options.augment_config), rng
            )
        return self._build(images, labels, source.parents, rng)

    # ---- clip assembly --------------------------------------------------------------------------
    def _select(
        self, present: list[set[int]], parents: dict[int, int], rng: np.random.Generator
    ) -> list[int]:
        """Cells of frame 0 with their in-clip descendants, whole families, <= max_num_objects."""
        children: dict[int, list[int]] = {}
        for daughter, mother in sorted(parents.items()):
            children.setdefault(mother, []).append(daughter)
        in_clip = set().union(*present)
        chosen: list[int] = []
        for root in rng.permutation(sorted(present[0])):
            family, stack = [int(root)], [int(root)]
            while stack:
                for daughter in children.get(stack.pop(), []):
                    if daughter in in_clip and daughter not in family and daughter not in chosen:
                        family.append(daughter)
                        stack.append(daughter)
            if len(chosen) + len(family) <= self.options.max_num_objects:
                chosen.extend(family)
            if len(chosen) == self.options.max_num_objects:
                break
        return chosen

    def _build(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        parents: dict[int, int],
        rng: np.random.Generator,
    ) -> ClipSample:
        size = self.options.resolution
        flat = IntensityNorm(mode="dtype")  # images are already in [0, 1]: identity scaling
        processed = [preprocess_frame(image, size, flat) for image in images]
        pixel_values = torch.stack([tensor for tensor, _ in processed])
        box = processed[0][1]
        present = [set(np.unique(frame).tolist()) - {0} for frame in labels]
        chosen = self._select(present, parents, rng)

        masks = torch.zeros((self.options.num_frames, len(chosen), size, size), dtype=torch.bool)
        for t, frame in enumerate(labels):
            slots = [k for k, label in enumerate(chosen) if label in present[t]]
            if slots:
                stack = np.stack([frame == chosen[k] for k in slots], axis=-1)
                masks[t, slots] = box.image_to_model(stack.astype(np.float32)) > 0.5
        if self.options.mother_covers_daughters:
            _cover_daughters(masks, chosen, parents)
        # An object is prompted on the first frame its target is visible on the canvas; one that
        # never is (e.g. too small after resizing), or a frame-0 cell invisible there, is dropped.
        visible = masks.flatten(2).any(-1)  # (T, N)
        pairs = []  # (slot, prompt frame)
        for k, label in enumerate(chosen):
            frames = torch.nonzero(visible[:, k]).flatten().tolist()
            if frames and (frames[0] == 0 or label not in present[0]):
                pairs.append((k, frames[0]))
        pairs.sort(key=lambda pair: (pair[1], chosen[pair[0]]))
        n_cells, n_bkgd = len(pairs), int(rng.integers(0, self.options.max_num_bkgd_objects + 1))
        targets = torch.zeros(
            (self.options.num_frames, n_cells + n_bkgd, size, size), dtype=torch.bool
        )
        targets[:, :n_cells] = masks[:, [k for k, _ in pairs]]
        slot_of = {chosen[k]: slot for slot, (k, _) in enumerate(pairs)}
        parent_slot = [slot_of.get(parents.get(chosen[k], 0), -1) for k, _ in pairs]
        return ClipSample(
            pixel_values=pixel_values,
            targets=targets,
            prompt_frame=torch.tensor([f for _, f in pairs] + [0] * n_bkgd, dtype=torch.long),
            is_background=torch.tensor([False] * n_cells + [True] * n_bkgd, dtype=torch.bool),
            valid_region=_valid_region(box),
            # any pixel a cell touches at all (> 0, not > 0.5) is no empty space to click
            foreground=box.image_to_model((labels[0] > 0).astype(np.float32))[0] > 0,
            object_ids=torch.tensor([chosen[k] for k, _ in pairs] + [0] * n_bkgd, dtype=torch.long),
            parent_slot=torch.tensor(parent_slot + [-1] * n_bkgd, dtype=torch.long),
            centres=torch.from_numpy(np.stack([centre_heatmap(frame, box) for frame in labels])),
        )


def _cover_daughters(masks: torch.Tensor, chosen: list[int], parents: dict[int, int]) -> None:
    """In place on (T, K, S, S) ``masks`` of the ``chosen`` labels: after a mother's last frame
    her target becomes the union of her chosen descendants (families are whole, so all of them
    are there). Deepest mothers first, so a grandmother covers her granddaughters too."""
    slot = {label: k for k, label in enumerate(chosen)}
    children: dict[int, list[int]] = {}
    for daughter, mother in parents.items():
        if daughter in slot and mother in slot:
            children.setdefault(mother, []).append(daughter)
    present = masks.flatten(2).any(-1)  # (T, K)

    def depth(label: int) -> int:
        return 0 if label not in parents else 1 + depth(parents[label])

    for mother in sorted(children, key=depth, reverse=True):
        k = slot[mother]
        frames = torch.nonzero(present[:, k]).flatten()
        if not len(frames):
            continue
        after = int(frames[-1]) + 1
        for daughter in children[mother]:
            masks[after:, k] |= masks[after:, slot[daughter]]


def _hwc(frame: Any) -> np.ndarray:
    """One frame as (H, W, C) (C = 1 for greyscale), as inference's preprocessing sees it."""
    arr = np.asarray(frame)
    return arr[..., None] if arr.ndim == 2 else arr


def _valid_region(box: Letterbox) -> torch.Tensor:
    rows, cols = box.resized_hw
    region = torch.zeros((box.size, box.size), dtype=torch.bool)
    region[:rows, :cols] = True
    return region


def movie_datasets(
    images: Any,
    labels: Any,
    parents: dict[int, int] | None,
    scratch: Any,
    holdout: float = 0.15,
) -> tuple[CTCClipDataset, CTCClipDataset | None]:
    """Training and validation clips from one movie and its (corrected) labels.

    The last ``holdout`` fraction of the frames (at least one clip's worth) is held out for
    validation, without augmentation: later frames are the closest stand-in for "the next
    movie", and a time split keeps validation clips out of the training clips. No validation
    set when ``holdout`` is 0 or the movie is too short for both. Labels are made CTC-valid
    first (painted edits), options come from the config's ``scratch`` section.
    """
    from ..ctc.repair import make_consistent

    labels = np.asarray(labels)
    n, total = scratch.num_frames, len(labels)
    held = max(n, round(total * holdout)) if holdout > 0 else 0
    split = total - held if held and total - held >= n else total

    def clips(part: slice, augment: bool | None) -> CTCClipDataset:
        fixed, lineage = make_consistent(labels[part], parents)  # clip frames count from 0
        options = ClipOptions.from_scratch(scratch, augment=augment)
        return CTCClipDataset.from_arrays(images[part], fixed, lineage, **vars(options))

    train = clips(slice(0, split), None)
    return train, clips(slice(split, total), False) if split < total else None
