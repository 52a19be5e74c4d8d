"""Prompt-and-propagate cell tracking with SAM 2: the headless engine behind the widget and CLI.

Built on transformers' ``Sam2VideoModel.forward`` (one frame, all given objects; Meta's
reference semantics) with what cell tracking needs around it:

* per-object control: each object is tracked only where it lives (a daughter from its division
  frame, a mother up to the frame before), and a correction re-tracks only the corrected object;
* streaming: :meth:`TrackingSession.propagate` yields one :class:`FrameResult` per frame as it
  is computed; stopping the iteration leaves the session consistent and resumable;
* bounded memory on long movies: frames are preprocessed lazily, image features live in a small
  LRU and the memory bank keeps only what SAM 2 can still attend to (``features.py``);
* results as one (T, Y, X) uint16 labels array (overlaps resolved by mask logit) plus a CTC
  lineage with divisions (manual or automatic) and gaps split into linked tracks.

Prompts on a frame make it a conditioning frame for that object. The first prompts of an object
are decoded without memory; later clicks on a frame the object was already tracked on are
decoded with its memory (SAM 2's interactive correction) and the frame then stays a
conditioning frame, so a correction keeps anchoring the track. Mask prompts are taken as given.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

from ..ctc import Lineage, write_res
from ..ctc.repair import plan_segments
from ..ctc.writer import Existing
from ..model.device import autocast_context
from ..model.heads import division_head
from ..model.hf_sam2 import (
    COND,
    MASKMEM_FEATURES,
    NON_COND,
    VISION_FEATS,
    VISION_POS,
    empty_outputs,
    recorded_decodes,
    session_view,
    share_object_outputs,
)
from ..model.preprocess import IntensityNorm
from ..model.resolution import image_size
from .compose import compose_frame, resolve_overlaps, split_parts
from .detect import DetectConfig, Detection, detect_cells
from .division_config import LEARNED_MODES, DivisionConfig, resolve_mode
from .divisions import inherited_outputs, learned_division
from .export import TrackingResult, build_result
from .features import FeatureCache, SharedPositions, drop_partial_memories, prune_outputs
from .frames import FrameSource
from .planner import DIRECTIONS, ObjectSpan, Pass, advance, is_active, plan
from .prompts import (
    BoxPrompt,
    FramePrompt,
    MaskPrompt,
    PointPrompt,
    Prompt,
    check_box,
    check_mask,
    check_points,
    mask_canvas,
    point_inputs,
)

MAX_OBJECT_ID = int(np.iinfo(np.uint16).max)
# SAM 2 turns a mask prompt into logits mask * 20 - 10 (Sam2VideoModel._use_mask_as_output).
_MASK_SCALE, _MASK_BIAS = 20.0, -10.0


class PropagationInterrupted(RuntimeError):
    """The session changed (new prompt, division, removal, another propagation) while a
    propagation was paused between frames; start a new :meth:`TrackingSession.propagate`."""


@dataclass(frozen=True)
class FrameResult:
    """One computed frame: ``labels`` (a copy of the session's frame), the objects computed on
    it with their object scores (SAM 2's presence logits, > 0 = present) and areas (pixels after
    overlap resolution), and the divisions (mother, daughter, daughter) that start on it."""

    frame: int
    labels: np.ndarray
    object_ids: tuple[int, ...]
    scores: dict[int, float]
    areas: dict[int, int]
    divisions: tuple[tuple[int, int, int], ...] = ()
    direction: str = "forward"

    @property
    def masks(self) -> dict[int, np.ndarray]:
        """Boolean mask of every computed object (empty where it lost all its pixels)."""
        return {oid: self.labels == oid for oid in self.object_ids}


@dataclass
class _Object:
    """One tracked cell and its SAM 2 state (the output dict transformers reads and writes)."""

    id: int
    parent: int = 0
    first: int | None = None  # hard start: a daughter begins on its division frame
    last: int | None = None  # hard end: a mother ends on the frame before its division
    prompts: dict[int, FramePrompt] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)  # prompt frames not decoded yet
    outputs: dict = field(default_factory=empty_outputs)
    areas: dict[int, int] = field(default_factory=dict)  # frame -> pixels in the labels
    pending_fwd: int | None = None  # first frame whose forward result is stale or missing
    pending_bwd: int | None = None  # first frame (going back) still to be filled backward


@dataclass(eq=False)
class SessionSnapshot:
    """An opaque saved state of a :class:`TrackingSession` (see ``snapshot``/``restore``).

    Label frames are saved lazily: the session keeps a frame's old content the first time it
    writes that frame after the snapshot, so a snapshot of a 1000-frame movie costs nothing
    until frames change, and then one copy per changed frame (not a copy of the movie)."""

    frames: dict[int, np.ndarray]  # frame -> labels before the session first changed it
    objects: dict[int, _Object]
    next_id: int
    shape: tuple[int, ...]


def _stale_from(o: _Object, t: int) -> None:
    """Forward results of ``o`` from frame ``t`` on must be recomputed."""
    o.pending_fwd = t if o.pending_fwd is None else min(o.pending_fwd, t)


def _copy_object(o: _Object) -> _Object:
    """A copy that later steps cannot change: containers are copied; tensors and prompts,
    which are replaced but never modified in place, are shared."""
    outputs = {k: {f: dict(e) for f, e in v.items()} for k, v in o.outputs.items()}
    return replace(
        o, prompts=dict(o.prompts), dirty=set(o.dirty), outputs=outputs, areas=dict(o.areas)
    )


class Propagation:
    """An iterator of :class:`FrameResult` with a length (the frames it will visit), for
    progress bars; stop iterating (or :meth:`close`) to cancel."""

    def __init__(self, frames: Iterator[FrameResult], length: int) -> None:
        self._frames = frames
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Propagation:
        return self

    def __next__(self) -> FrameResult:
        return next(self._frames)

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


def _unwrap(model: Any) -> Sam2VideoModel:
    """The Sam2VideoModel of a LoadedModel, a peft model (LoRA layers stay active) or itself."""
    for candidate in (model, getattr(model, "model", None)):
        if hasattr(candidate, "get_base_model"):
            candidate = candidate.get_base_model()
        if isinstance(candidate, Sam2VideoModel):
            return candidate
    raise TypeError(
        "model must be a LoadedModel (napari_cellsam2.model.load_model) or a transformers "
        f"Sam2VideoModel, got {type(model).__name__}"
    )


class TrackingSession:
    """Track many cells through a (T, Y, X) time-lapse from a few prompts.

    ``frames`` may be lazy (``ctc.LazyFrames``, dask, zarr, a memory map): frames are read and
    preprocessed when SAM 2 needs them. Frame arguments are 0-based positions; ``first_frame``
    is the CTC index of position 0 and only shifts the exported lineage. Object IDs are the
    values written to :attr:`labels` (1..65535). ``norm`` defaults to the loaded model's
    intensity normalisation (or :class:`IntensityNorm`). ``feature_cache_frames`` bounds the
    image features kept for instant clicks. ``divisions`` (forward propagation only;
    :mod:`.division_config`): ``"learned"`` (the default for a model with a division head) lets
    the head divide a cell, with ``division_config``'s thresholds, into daughters that inherit
    its memory; ``"learned+split"`` also lets the ``"split"`` rule divide the cells the head
    did not; ``"split"`` makes a tracked mask that splits into two parts of at least
    ``division_config.split_min_area`` pixels and ``split_min_fraction`` of the mother's
    previous area a division; ``"off"`` (the default without the head) divides only by hand.
    ``precision`` (``auto``: bf16 on CUDA, else fp32; ``fp32``; ``bf16``, CUDA only) may be
    changed at any time and applies from the next frame computed.
    """

    def __init__(
        self,
        model: Any,
        frames: Any,
        *,
        norm: IntensityNorm | None = None,
        feature_cache_frames: int = 8,
        divisions: str | None = None,
        division_config: DivisionConfig | None = None,
        first_frame: int = 0,
        precision: str = "auto",
    ) -> None:
        self.model = _unwrap(model)
        if self.model.training:
            raise ValueError("the SAM 2 model is in training mode; call model.eval() first")
        if int(first_frame) != first_frame or first_frame < 0:
            raise ValueError(f"first_frame must be a non-negative integer, got {first_frame!r}")
        self.device = next(self.model.parameters()).device
        self.precision = precision  # validated by the setter
        norm = norm or getattr(model, "norm", None) or IntensityNorm()
        self.frames = FrameSource(frames, image_size(self.model.config), norm)
        self.num_frames = self.frames.num_frames
        self.height, self.width = self.frames.height, self.frames.width
        self.first_frame = int(first_frame)
        self.divisions = divisions  # validated by the setter
        self.division_config = division_config or DivisionConfig()
        self.labels = np.zeros((self.num_frames, self.height, self.width), np.uint16)
        self._features = FeatureCache(self.device, int(feature_cache_frames))
        self._positions = SharedPositions()
        self._objects: dict[int, _Object] = {}
        self._next_id = 1
        self._snapshots: weakref.WeakSet[SessionSnapshot] = weakref.WeakSet()
        self._features_stale = False
        self._version = 0
        self._lock = threading.RLock()
        # One image encode at a time, outside ``_lock`` (see :meth:`prefetch`). Never taken
        # while holding ``_lock``: an encode waiting for ``_lock`` holds it.
        self._encoding = threading.Lock()
        config = self.model.config
        self._num_maskmem = int(config.num_maskmem)
        self._max_pointers = int(config.max_object_pointers_in_encoder)

    @property
    def divisions(self) -> str:
        """How divisions are found while propagating forward (one of ``DIVISION_MODES``)."""
        return self._divisions

    @divisions.setter
    def divisions(self, mode: str | None) -> None:
        self._divisions = self.resolve_divisions(mode)

    def resolve_divisions(self, mode: str | None) -> str:
        """The mode ``divisions = mode`` would set (None: the model's default), or the
        ValueError it would raise; changes nothing, so a GUI can check a choice on its own
        thread and apply it in the worker that owns the session."""
        return resolve_mode(mode, division_head(self.model) is not None)

    # ---- objects ------------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return sorted(self._objects)

    def new_object_id(self) -> int:
        """An ID no object has had in this session (not reserved until used)."""
        return self._next_id

    def reserve_ids_up_to(self, label: int) -> None:
        """A label painted into :attr:`labels` outside the session (napari's brush) is a cell:
        no new object (a daughter, a detection, a new cell) may take its ID and merge with it.
        :meth:`sync_labels` does the same for every label, with a pass over the whole movie."""
        with self._lock:
            if 0 < int(label) <= MAX_OBJECT_ID:
                self._next_id = max(self._next_id, int(label) + 1)

    def parent(self, obj_id: int) -> int:
        """The mother of ``obj_id`` (0 = none)."""
        return self._get(obj_id).parent

    def prompt_frames(self, obj_id: int) -> list[int]:
        return sorted(self._get(obj_id).prompts)

    def frame_range(self, obj_id: int) -> tuple[int, int]:
        """Frames an object may live on: (division frame or 0, frame before its division or T-1)."""
        return self._bounds(self._get(obj_id))

    def _bounds(self, o: _Object) -> tuple[int, int]:
        lo = o.first if o.first is not None else 0
        hi = o.last if o.last is not None else self.num_frames - 1
        return lo, hi

    def _get(self, obj_id: Any) -> _Object:
        try:
            return self._objects[int(obj_id)]
        except (KeyError, TypeError, ValueError):
            known = ", ".join(map(str, self.object_ids[:20])) or "none"
            raise ValueError(f"unknown object id {obj_id!r} (known: {known})") from None

    def _check_id(self, obj_id: Any) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer):
            raise ValueError(f"object id must be an integer, got {obj_id!r}")
        if not 1 <= int(obj_id) <= MAX_OBJECT_ID:
            raise ValueError(f"object id must be in 1..{MAX_OBJECT_ID}, got {obj_id}")
        return int(obj_id)

    def _check_frame(self, frame: Any, what: str = "frame") -> int:
        if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
            raise ValueError(f"{what} must be an integer frame position, got {frame!r}")
        if not 0 <= int(frame) < self.num_frames:
            raise ValueError(
                f"{what} {frame} is out of range: the sequence has frames 0..{self.num_frames - 1}"
            )
        return int(frame)

    def _bump(self) -> None:
        self._version += 1

    # ---- prompts ------------------------------------------------------------------------------
    def add_points(
        self, obj_id: int, frame: int, points: Any, labels: Any = None, *, replace: bool = False
    ) -> int:
        """Add clicks (x, y in original pixels; label 1 = cell, 0 = not the cell) for an object
        on a frame; they accumulate with earlier clicks there unless ``replace``. Creates the
        object if the ID is new. Call :meth:`predict_frame` for the mask, :meth:`propagate`
        to track."""
        prompt = check_points(points, labels, self.height, self.width)
        return self._add_prompt(obj_id, frame, prompt, replace)

    def add_box(self, obj_id: int, frame: int, box: Any) -> int:
        """Add (or replace) a box (x0, y0, x1, y1) around the object on a frame."""
        return self._add_prompt(obj_id, frame, check_box(box, self.height, self.width), False)

    def add_mask(self, obj_id: int, frame: int, mask: Any) -> int:
        """Give the object's mask (Y, X) on a frame; it replaces the frame's other prompts."""
        prompt = self._checked_mask(mask)
        return self._add_prompt(obj_id, frame, prompt, True)

    def add_prompt(self, obj_id: int, frame: int, prompt: Prompt) -> int:
        """Add a ``PointPrompt``, ``BoxPrompt`` or ``MaskPrompt`` as :meth:`add_points`,
        :meth:`add_box` or :meth:`add_mask` would (e.g. prompts read from a file)."""
        checked = self._checked_prompt(prompt)
        return self._add_prompt(obj_id, frame, checked, isinstance(checked, MaskPrompt))

    def _checked_mask(self, mask: Any, what: str = "mask") -> MaskPrompt:
        prompt = check_mask(mask, self.height, self.width)
        if not mask_canvas(prompt.mask, self.frames.letterbox).any():
            raise ValueError(
                f"{what} of {int(prompt.mask.sum())} pixel(s) vanishes at the model resolution "
                f"({self.frames.image_size} px for a {self.height}x{self.width} frame); give a "
                "point or box prompt for such a small cell"
            )
        return prompt

    def _checked_prompt(self, prompt: Any) -> Prompt:
        if isinstance(prompt, PointPrompt):
            return check_points(prompt.points, prompt.labels, self.height, self.width)
        if isinstance(prompt, BoxPrompt):
            return check_box(prompt.box, self.height, self.width)
        if isinstance(prompt, MaskPrompt):
            return self._checked_mask(prompt.mask)
        raise ValueError(
            f"a prompt must be a PointPrompt, BoxPrompt or MaskPrompt, got {type(prompt).__name__}"
        )

    def _add_prompt(self, obj_id: Any, frame: Any, prompt: Prompt, replace: bool) -> int:
        with self._lock:
            oid = self._check_id(obj_id)
            t = self._check_frame(frame)
            o = self._objects.get(oid)
            if o is not None:
                lo, hi = self._bounds(o)
                if not lo <= t <= hi:
                    raise ValueError(
                        f"object {oid} lives on frames {lo}..{hi} (division); frame {t} is "
                        "outside, prompt a daughter or a new object instead"
                    )
            else:
                o = self._objects[oid] = _Object(oid)
                self._next_id = max(self._next_id, oid + 1)
            self._bump()
            base = FramePrompt() if replace or t not in o.prompts else o.prompts[t]
            earliest = min(o.prompts, default=None)
            o.prompts[t] = base.merged(prompt)
            self._mark_dirty(o, t, earliest)
            return oid

    def _mark_dirty(self, o: _Object, t: int, earliest: int | None) -> None:
        o.dirty.add(t)
        o.outputs[COND].pop(t, None)
        o.outputs[NON_COND].pop(t, None)
        _stale_from(o, t)
        if earliest is None or t < earliest:
            o.pending_bwd = t if t > self._bounds(o)[0] else None

    def remove_prompts(self, obj_id: int, frame: int) -> None:
        """Forget an object's prompts on a frame. Removing its last prompt removes the object;
        removing its earliest prompt clears what was tracked before the next one."""
        with self._lock:
            o = self._get(obj_id)
            t = self._check_frame(frame)
            if t not in o.prompts:
                raise ValueError(
                    f"object {o.id} has no prompt on frame {t} (prompts on {sorted(o.prompts)})"
                )
            self._bump()
            del o.prompts[t]
            o.dirty.discard(t)
            o.outputs[COND].pop(t, None)
            if not o.prompts:
                self._remove(o, scan=True)
                return
            earliest = min(o.prompts)
            if t < earliest:
                self._clear_labels(o, lambda f: f < earliest)
                # the memory of those frames grew from the removed prompt: never attend to it
                for f in [f for f in o.outputs[NON_COND] if f < earliest]:
                    del o.outputs[NON_COND][f]
                o.pending_bwd = earliest if earliest > self._bounds(o)[0] else None
                t = earliest
            _stale_from(o, t)

    def seed_from_labels(
        self, frame: int, labels: Any, *, skip_vanishing: bool = False
    ) -> list[int]:
        """Prompt every label of a (Y, X) labels frame as a mask (e.g. a GT TRA frame or a
        corrected result). A label that is an existing object ID corrects that object; others
        become new objects with that ID. A label too small to exist at the model resolution is
        refused, or left out with ``skip_vanishing`` (e.g. a 1-pixel fragment in a result used
        for scoring). Returns the IDs seeded."""
        with self._lock:
            t = self._check_frame(frame)
            lab = np.asarray(labels)
            if lab.shape != (self.height, self.width):
                raise ValueError(
                    f"labels frame has shape {lab.shape}, expected {(self.height, self.width)}"
                )
            if lab.dtype.kind not in "ui":
                raise ValueError(f"labels frame must be integers, got dtype {lab.dtype}")
            ids = [int(i) for i in np.unique(lab) if i != 0]
            if not ids:
                raise ValueError(f"labels frame {t} has no objects (all zero)")
            if ids[0] < 0 or ids[-1] > MAX_OBJECT_ID:
                raise ValueError(f"labels must be in 0..{MAX_OBJECT_ID}, got {ids[0]}..{ids[-1]}")
            prompts = {}
            for i in ids:
                try:
                    prompts[i] = self._checked_mask(lab == i, f"label {i}")
                except ValueError:
                    if not skip_vanishing:
                        raise
            ids = list(prompts)
            for i in ids:
                o = self._objects.get(i)
                if o is not None and not self._bounds(o)[0] <= t <= self._bounds(o)[1]:
                    raise ValueError(f"label {i}: object {i} does not live on frame {t}")
            for i in ids:
                self._add_prompt(i, t, prompts[i], True)
            return ids

    # ---- divisions and removal ----------------------------------------------------------------
    def divide(self, obj_id: int, frame: int, daughters: Sequence[Prompt]) -> tuple[int, int]:
        """The object divides on ``frame``: it ends on ``frame - 1`` and two new daughter objects
        (prompted by ``daughters``: two Point/Box/MaskPrompts) start on ``frame`` with it as
        parent. Returns the daughters' IDs; :meth:`propagate` then tracks them."""
        with self._lock:
            o = self._get(obj_id)
            t = self._check_frame(frame)
            if len(daughters) != 2:
                raise ValueError(
                    f"a division needs exactly 2 daughter prompts, got {len(daughters)}"
                )
            lo = self._bounds(o)[0]
            if o.last is not None:
                raise ValueError(
                    f"object {o.id} already divides on frame {o.last + 1}; remove its daughters "
                    "first"
                )
            if t <= lo:
                raise ValueError(f"object {o.id} starts on frame {lo}; it cannot divide on {t}")
            if min(o.prompts) >= t:
                raise ValueError(
                    f"object {o.id} is first prompted on frame {min(o.prompts)}; it must exist "
                    f"before dividing on frame {t}"
                )
            later = sorted(f for f in o.prompts if f >= t)
            if later:
                raise ValueError(
                    f"object {o.id} has prompts on frame(s) {later}, at or after the division "
                    f"frame {t}; remove them first (remove_prompts)"
                )
            checked = [self._checked_prompt(p) for p in daughters]
            if self._next_id + 1 > MAX_OBJECT_ID:
                raise ValueError(f"no object IDs left (max {MAX_OBJECT_ID})")
            self._bump()
            self._end(o, t, scan=True)
            return tuple(self._daughter(o, t, p).id for p in checked)  # type: ignore[return-value]

    def _end(self, o: _Object, t: int, scan: bool = False) -> None:
        """Make ``o`` end on frame ``t - 1`` (it divides on ``t``); ``scan``: see
        :meth:`_clear_labels`."""
        o.last = t - 1
        self._clear_labels(o, lambda f: f >= t, scan)
        for key in (COND, NON_COND):
            for f in [f for f in o.outputs[key] if f >= t]:
                del o.outputs[key][f]
        if o.pending_fwd is not None and o.pending_fwd >= t:
            o.pending_fwd = None

    def _daughter(self, mother: _Object, t: int, prompt: Prompt) -> _Object:
        return self._new_object(t, prompt, parent=mother.id, first=t)

    def _new_object(
        self, t: int, prompt: Prompt, *, parent: int = 0, first: int | None = None
    ) -> _Object:
        """A new object under the next free ID, prompted on ``t``; ``first``: it starts there
        (nothing before it is ever tracked, so nothing is left to fill backward)."""
        o = _Object(self._next_id, parent=parent, first=first)
        self._next_id += 1
        self._objects[o.id] = o
        o.prompts[t] = FramePrompt().merged(prompt)
        self._mark_dirty(o, t, None)
        return o

    def remove_object(self, obj_id: int) -> None:
        """Delete an object and its pixels. Its daughters lose their parent; a mother whose
        daughters are all removed no longer divides and will be tracked on by propagate()."""
        with self._lock:
            o = self._get(obj_id)
            self._bump()
            self._remove(o, scan=True)

    def _remove(self, o: _Object, scan: bool = False) -> None:
        self._clear_labels(o, lambda f: True, scan)
        del self._objects[o.id]
        for c in self._objects.values():
            if c.parent == o.id:
                c.parent = 0
        mother = self._objects.get(o.parent)
        if (
            mother is not None
            and mother.last is not None
            and not any(c.parent == mother.id for c in self._objects.values())
        ):
            resume = mother.last + 1
            mother.last = None
            if resume < self.num_frames:
                _stale_from(mother, resume)

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        autocast_context(self.device, value)  # raises for an unknown or unusable precision
        if getattr(self, "_precision", value) != value:
            # cached image features have the old precision's dtype; the worker drops them
            # before its next frame (no lock here: the GUI thread must not wait for a frame)
            self._features_stale = True
        self._precision = value

    def _drop_stale_features(self) -> None:
        if self._features_stale:
            self._features.clear_all()
            self._features_stale = False

    def _keep_for_undo(self, t: int) -> None:
        """Called before every write to ``labels[t]``: live snapshots keep its old content."""
        for snapshot in self._snapshots:
            if t not in snapshot.frames:
                snapshot.frames[t] = self.labels[t].copy()

    def _clear_labels(self, o: _Object, which, scan: bool = False) -> None:
        """Erase ``o`` from the frames ``which`` accepts. The frames it was computed on are
        known (``o.areas``); with ``scan``, every frame is searched, for pixels of its ID painted
        since the last :meth:`sync_labels` (a user's delete or division must not leave them to
        be exported as a track of a cell that is gone). Automatic divisions, many per movie,
        skip the scan."""
        frames = range(self.num_frames) if scan else list(o.areas)
        for f in [f for f in frames if which(f)]:
            hit = self.labels[f] == o.id
            if hit.any():
                self._keep_for_undo(f)
                self.labels[f][hit] = 0
            o.areas.pop(f, None)

    # ---- running SAM 2 ------------------------------------------------------------------------
    def prefetch(self, frame: int) -> None:
        """Compute and cache a frame's image features (e.g. when the user moves to it), so the
        next click there runs only the prompt encoder and mask decoder.

        The image encoder (seconds on a CPU) runs outside the session lock: prompts, previews
        and tracking steps on other frames never wait for it, and a preview of this frame waits
        for it in its own worker instead of encoding the frame a second time."""
        self._encode(self._check_frame(frame))

    def _encode(self, t: int) -> None:
        """Cache frame ``t``'s image features; the caller must not hold ``_lock``."""
        with self._encoding:
            with self._lock:
                self._drop_stale_features()
                if t in self._features:
                    return
                precision = self.precision
            pixels = self.frames[t][None].to(self.device)
            with torch.inference_mode(), autocast_context(self.device, precision):
                out = self.model.get_image_features(pixels, return_dict=True)
            with self._lock:
                self._drop_stale_features()
                if self.precision != precision:  # changed while encoding: wrong dtype
                    return
                self._features.cache_vision_features(
                    t,
                    {
                        VISION_FEATS: out.fpn_hidden_states,
                        VISION_POS: out.fpn_position_encoding,
                    },
                )

    def detect(self, frame: int, config: DetectConfig | None = None) -> list[Detection]:
        """Find the cells on a frame without prompts (a grid of clicks, filtered and
        deduplicated: :func:`.detect.detect_cells`); nothing is added to the session. The frame
        is encoded first, outside the lock (see :meth:`prefetch`)."""
        t = self._check_frame(frame)
        for _ in range(3):  # the features may be evicted between encoding and use
            self._encode(t)
            with self._lock:
                cached = self._features.get_vision_features(t)
                if cached is None:
                    continue
                with autocast_context(self.device, self.precision):
                    return detect_cells(
                        self.model, cached[VISION_FEATS], self.frames.letterbox, config
                    )
        raise RuntimeError(f"the image features of frame {t} were evicted three times")

    def add_detections(
        self,
        frame: int,
        detections: Sequence[Detection],
        max_overlap: float = 0.5,
        *,
        starts_here: bool = False,
    ) -> list[int]:
        """Make each detection a new object prompted by its mask on ``frame``, except those that
        are already tracked there (more than ``max_overlap`` of the mask under existing labels)
        and those too small to exist at the model resolution. ``starts_here``: the cells entered
        on ``frame`` (new cells found while tracking), so no propagation ever tracks them before
        it. Returns the new IDs."""
        with self._lock:
            t = self._check_frame(frame)
            prompts = []  # every detection is checked before any is added: all or nothing
            for detection in detections:
                mask = np.asarray(detection.mask, bool)
                if mask.shape != (self.height, self.width):
                    raise ValueError(
                        f"detection mask has shape {mask.shape}, expected "
                        f"{(self.height, self.width)}"
                    )
                area = int(mask.sum())
                if not area or (self.labels[t][mask] != 0).sum() > max_overlap * area:
                    continue
                try:
                    prompts.append(self._checked_mask(mask))
                except ValueError:  # too small to exist at the model resolution: not a cell
                    continue
            if self._next_id + len(prompts) - 1 > MAX_OBJECT_ID:
                raise ValueError(
                    f"no object IDs left for {len(prompts)} new cells (max {MAX_OBJECT_ID})"
                )
            if prompts:
                self._bump()
            first = t if starts_here else None
            return [self._new_object(t, prompt, first=first).id for prompt in prompts]

    def predict_frame(self, frame: int) -> dict[int, np.ndarray]:
        """Decode the new prompts on a frame (an instant preview when its features are cached)
        and return the mask of every object on it, including prompted objects that came out
        empty. The frame is encoded first, outside the lock (see :meth:`prefetch`)."""
        t = self._check_frame(frame)
        if any(t in o.dirty for o in list(self._objects.values())):
            self._encode(t)
        with self._lock:
            todo = [o for o in self._objects.values() if t in o.dirty]
            if todo:
                self._bump()
                self._run_frame(t, todo, "prompt")
            ids = {o.id for o in self._objects.values() if t in o.areas} | {o.id for o in todo}
            return {oid: self.labels[t] == oid for oid in sorted(ids)}

    def _view(self, t: int, objs: Sequence[_Object]) -> tuple[Sam2VideoInferenceSession, list]:
        """A transformers session over exactly ``objs``: it shares their output dicts, the lazy
        frames and the feature cache, and carries the prompts not decoded yet."""
        self._drop_stale_features()
        view = session_view(self.height, self.width, self.device, self.frames, self._features)
        corrections = []
        box = self.frames.letterbox
        for o in objs:
            prompt = o.prompts[t] if t in o.dirty else None
            # Clicks on a frame the object is already tracked on are decoded with its memory.
            correction = (
                prompt is not None
                and prompt.mask is None
                and t in o.areas
                and bool(o.outputs[COND])
            )
            idx = share_object_outputs(
                view,
                o.id,
                o.outputs,
                new_inputs=prompt is not None,
                tracked_frame=t if correction else None,
            )
            if prompt is None:
                continue
            if prompt.mask is not None:
                canvas = mask_canvas(prompt.mask, box).to(self.device)
                view.add_mask_inputs(idx, t, canvas[None, None])
            else:
                view.add_point_inputs(idx, t, point_inputs(prompt, box, self.device))
            if correction:
                corrections.append(o)
        return view, corrections

    def _object_logits(self, t: int, objs: Sequence[_Object], pred_masks: torch.Tensor):
        """(N, Y, X) float logits on the original grid; mask prompts as SAM 2 passes them."""
        box = self.frames.letterbox
        logits = box.logits_to_original(pred_masks[:, 0].float())
        for i, o in enumerate(objs):
            prompt = o.prompts.get(t)
            if prompt is not None and prompt.mask is not None:
                canvas = mask_canvas(prompt.mask, box).to(logits.device)
                logits[i] = box.logits_to_original(canvas * _MASK_SCALE + _MASK_BIAS)
        return logits

    def _run_frame(
        self, t: int, objs: Sequence[_Object], direction: str, record: bool = False
    ) -> tuple[dict[int, float], list | None]:
        """Run SAM 2 for ``objs`` on frame ``t``, write the labels frame; returns the object
        scores and, with ``record`` and a division head, every mask-decoder call in order."""
        reverse = direction == "backward"
        for o in objs:
            drop_partial_memories(o.outputs, t, reverse, self._num_maskmem)
        view, corrections = self._view(t, objs)
        try:
            with torch.inference_mode():
                decoder = self.model.mask_decoder
                with (
                    autocast_context(self.device, self.precision),
                    recorded_decodes(decoder, record) as decodes,
                ):
                    out = self.model(inference_session=view, frame_idx=t, reverse=reverse)
                logits = self._object_logits(t, objs, out.pred_masks)
                scores = out.object_score_logits.float().reshape(-1).cpu().tolist()
                new = resolve_overlaps(logits, [o.id for o in objs])
        except BaseException:
            # e.g. out of memory or Ctrl-C inside SAM 2: forget this frame's half-stored outputs
            # (no memory encoded yet) so that nothing ever attends to them; prompts stay dirty.
            for o in objs:
                for entries in o.outputs.values():
                    if MASKMEM_FEATURES not in entries.get(t, {MASKMEM_FEATURES: None}):
                        del entries[t]
            raise
        for o in corrections:
            entry = o.outputs[NON_COND].pop(t)
            o.outputs[COND][t] = entry
        for o in objs:
            o.dirty.discard(t)
            prune_outputs(
                o.outputs, t, direction, self._num_maskmem, self._max_pointers, self._positions
            )
        prompted = [o.id for o in objs if t in o.prompts]
        self._write(t, compose_frame(self.labels[t], new, [o.id for o in objs], prompted))
        return {o.id: s for o, s in zip(objs, scores, strict=True)}, decodes

    def _write(self, t: int, frame: np.ndarray) -> None:
        self._keep_for_undo(t)
        self.labels[t] = frame
        self._count_areas(t, np.bincount(frame.ravel()))

    def _count_areas(self, t: int, counts: np.ndarray) -> None:
        """Every object's pixel count on frame ``t`` from the frame's label histogram."""
        for o in self._objects.values():
            area = int(counts[o.id]) if o.id < len(counts) else 0
            if area:
                o.areas[t] = area
            else:
                o.areas.pop(t, None)

    # ---- propagation --------------------------------------------------------------------------
    def propagate(
        self,
        direction: str = "forward",
        *,
        start: int | None = None,
        end: int | None = None,
        obj_ids: Iterable[int] | None = None,
    ) -> Propagation:
        """Track objects frame by frame, yielding a :class:`FrameResult` per frame as computed.

        By default only what is stale is run: each object from its earliest new prompt (or where
        an earlier propagation stopped), so after a correction on frame t only that object is
        re-tracked from t and nothing before t changes. "backward" fills frames before an
        object's earliest prompt (objects first prompted mid-movie); "both" runs forward, then
        backward. ``obj_ids`` forces those objects to run (from their first prompt, or their
        last going backward); ``start`` makes the selected objects run from that frame (once
        prompted); ``end`` bounds the frames (not with "both"). Stopping the iteration leaves a
        consistent session; a later propagate() resumes where it stopped. Changing the session
        while paused makes the next step raise :class:`PropagationInterrupted`.
        """
        with self._lock:
            passes = self._plan(direction, start, end, obj_ids)
            self._bump()
            token = self._version
            length = sum(len(p.frames) for p in passes)
            return Propagation(self._run_passes(passes, token), length)

    def _plan(self, direction, start, end, obj_ids) -> list[Pass]:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        start = None if start is None else self._check_frame(start, "start")
        end = None if end is None else self._check_frame(end, "end")
        explicit = obj_ids is not None
        objs = [self._get(i) for i in obj_ids] if explicit else list(self._objects.values())
        spans = [self._span(o) for o in objs]
        return plan(spans, self.num_frames, direction, start, end, explicit)

    def _span(self, o: _Object) -> ObjectSpan:
        lo, hi = self._bounds(o)
        return ObjectSpan(o.id, tuple(sorted(o.prompts)), lo, hi, o.pending_fwd, o.pending_bwd)

    def _run_passes(self, passes: list[Pass], token: int) -> Iterator[FrameResult]:
        for p in passes:
            for t in p.frames:
                with self._lock:
                    if self._version != token:
                        raise PropagationInterrupted(
                            "the session changed while this propagation was paused (a prompt, "
                            "division, removal or another propagation); call propagate() again"
                        )
                    result = self._pass_step(p, t)
                yield result

    def _pass_step(self, p: Pass, t: int) -> FrameResult:
        forward = p.direction == "forward"
        objs = [o for o in self._objects.values() if is_active(p, o.id, *self._bounds(o), t)]
        for o in objs:
            if t == p.starts[o.id]:  # entries ahead of the pass are stale: never attend to them
                non_cond = o.outputs[NON_COND]
                for f in [f for f in non_cond if (f >= t if forward else f <= t)]:
                    del non_cond[f]
                # ... and so are the frames they held: if this pass stops early, a later
                # propagate() must resume from where it stopped (also for a re-run of frames
                # that were up to date, e.g. ``start=`` or named objects)
                if forward:
                    _stale_from(o, t)
                else:
                    o.pending_bwd = t if o.pending_bwd is None else max(o.pending_bwd, t)
        learned = forward and self.divisions in LEARNED_MODES
        scores, record = self._run_frame(t, objs, p.direction, learned) if objs else ({}, None)
        for o in objs:
            o.pending_fwd, o.pending_bwd = advance(p, self._span(o), t)
        divisions = []
        if forward and self.divisions != "off":
            # transformers decodes each object once, in order, on a frame none is prompted on
            aligned = record is not None and len(record) == len(objs)
            for i, o in enumerate(objs):
                division = None
                if learned and aligned:
                    division = self._learned_division(o, t, record[i])
                if division is None and self.divisions != "learned":
                    division = self._maybe_divide(o, t)
                if division is not None:
                    divisions.append(division)
                    scores.pop(o.id, None)
                    daughters = [self._objects[i] for i in division[1:]]
                    scores.update(self._run_frame(t, daughters, "prompt")[0])
                    for d in daughters:
                        d.pending_fwd = t + 1 if t + 1 < self.num_frames else None
                        p.starts[d.id] = t + 1
        ids = tuple(sorted(scores))
        return FrameResult(
            t,
            self.labels[t].copy(),
            ids,
            scores,
            {i: self._objects[i].areas.get(t, 0) for i in ids},
            tuple(divisions),
            p.direction,
        )

    def _may_divide(self, o: _Object, t: int) -> bool:
        """``o`` was tracked into frame ``t`` (not prompted there or later) and IDs are left."""
        return (
            t not in o.prompts
            and t - 1 in o.areas
            and max(o.prompts) <= t
            and self._next_id + 1 <= MAX_OBJECT_ID
        )

    def _learned_division(self, o: _Object, t: int, record) -> tuple[int, int, int] | None:
        """The division head's verdict on ``o`` at ``t`` (:mod:`.divisions`): daughters are
        the decoder's outputs 1 and 2 and start from a copy of the mother's memory."""
        if not self._may_divide(o, t):
            return None
        logits = learned_division(record, self.division_config)
        if logits is None:
            return None
        owner = resolve_overlaps(self.frames.letterbox.logits_to_original(logits.float()), [1, 2])
        try:
            prompts = [self._checked_mask(owner == k) for k in (1, 2)]
        except ValueError:  # a daughter too small to exist at the model resolution
            return None
        self._end(o, t)  # drops the mother's outputs from frame t on, keeps those before
        daughters = [self._daughter(o, t, prompt) for prompt in prompts]
        for d in daughters:
            d.outputs = inherited_outputs(o.outputs, t)
        return o.id, daughters[0].id, daughters[1].id

    def _maybe_divide(self, o: _Object, t: int) -> tuple[int, int, int] | None:
        """Automatic division: the tracked mask of ``o`` split into two substantial parts."""
        if not self._may_divide(o, t):
            return None
        parts = split_parts(
            self.labels[t] == o.id,
            self.division_config.split_min_area,
            self.division_config.split_min_fraction,
            o.areas[t - 1],
        )
        if parts is None:
            return None
        self._end(o, t)
        d1, d2 = (self._daughter(o, t, MaskPrompt(part)) for part in parts)
        return o.id, d1.id, d2.id

    # ---- external edits and undo -------------------------------------------------------------
    def sync_labels(self) -> dict[int, list[int]]:
        """Re-read which label is on which frame from :attr:`labels` (one pass over the array)
        after it was edited outside the session, e.g. painted in napari. Returns
        ``label -> frames``, including painted labels that are not session objects."""
        with self._lock:
            presence: dict[int, list[int]] = {}
            for t in range(self.num_frames):
                counts = np.bincount(np.asarray(self.labels[t]).ravel())
                for label in np.flatnonzero(counts[1:]) + 1:
                    presence.setdefault(int(label), []).append(t)
                self._count_areas(t, counts)
            # a painted label is a cell too: no new object (a daughter, a detection) may take
            # its ID and merge with it
            self._next_id = max(self._next_id, max(presence, default=0) + 1)
            return presence

    def adopt_labels(self, labels: Any) -> None:
        """Start from existing (T, Y, X) labels, e.g. a previous session's result kept across a
        restart. They are copied a frame at a time (lazy sources stay lazy) and new object IDs
        start above the largest label, so a new cell never merges with a kept one."""
        with self._lock:
            if tuple(labels.shape) != self.labels.shape:
                raise ValueError(
                    f"labels of shape {tuple(labels.shape)} do not fit this session's "
                    f"{self.labels.shape}"
                )
            before = self.snapshot()  # a frame that fails to read or check undoes the others
            try:
                top = 0
                for t in range(self.num_frames):
                    frame = np.asarray(labels[t])
                    if frame.dtype.kind not in "ui":
                        raise ValueError(f"labels frame {t} must be integers, got {frame.dtype}")
                    low, high = int(frame.min(initial=0)), int(frame.max(initial=0))
                    if low < 0 or high > MAX_OBJECT_ID:
                        raise ValueError(
                            f"labels frame {t} holds labels {low}..{high}; a session's labels "
                            f"are 0..{MAX_OBJECT_ID}"
                        )
                    self._write(t, frame)
                    top = max(top, high)
            except BaseException:
                self.restore(before)
                raise
            self._bump()
            self._next_id = max(self._next_id, top + 1)

    def snapshot(self) -> SessionSnapshot:
        """Everything needed to undo the session's later actions: the label frames they
        change, objects, prompts, SAM 2 memory. Edits made to :attr:`labels` from outside
        (napari's paint tools) are not undone, except on frames a later action rewrote."""
        with self._lock:
            objects = {i: _copy_object(o) for i, o in self._objects.items()}
            snapshot = SessionSnapshot({}, objects, self._next_id, self.labels.shape)
            self._snapshots.add(snapshot)
            return snapshot

    def restore(self, snapshot: SessionSnapshot) -> None:
        """Return to a :meth:`snapshot` (labels are restored in place, so views stay valid).
        A snapshot can be restored more than once."""
        with self._lock:
            if snapshot not in self._snapshots or snapshot.shape != self.labels.shape:
                raise ValueError("this snapshot belongs to another session")
            self._bump()
            for t, saved in snapshot.frames.items():
                self._keep_for_undo(t)  # for other live snapshots
                self.labels[t] = saved
            self._objects = {i: _copy_object(o) for i, o in snapshot.objects.items()}
            self._next_id = max(self._next_id, snapshot.next_id)

    # ---- results ------------------------------------------------------------------------------
    def _presence(self) -> tuple[dict[int, list[int]], dict[int, int]]:
        presence = self.sync_labels()
        parents = {o.id: o.parent for o in self._objects.values() if o.parent}
        return presence, parents

    def lineage(self) -> Lineage:
        """The CTC lineage of :meth:`result` ``.labels``, read from :attr:`labels` as it is now
        (painted edits included): gaps become parent-linked tracks, divisions parent links.
        Frames are CTC indices."""
        with self._lock:
            presence, parents = self._presence()
            return plan_segments(presence, parents, self.first_frame)[0]

    def result(self) -> TrackingResult:
        """Labels and lineage ready for ``ctc.write_res`` (see :class:`TrackingResult`)."""
        with self._lock:
            presence, parents = self._presence()
            # one copy, relabelled in place: tracking that runs on while the caller writes
            # the result must not change it
            labels = self.labels.copy()
            return build_result(labels, presence, parents, self.first_frame, copy=False)

    def write_res(self, folder: str | Path, existing: Existing = "refuse") -> Path:
        """Write a validated CTC RES folder (``mask###.tif`` + ``res_track.txt``); an earlier
        one is refused unless ``existing`` says otherwise (see ``ctc.writer.Existing``)."""
        res = self.result()
        return write_res(
            folder, res.labels, res.lineage, first_frame=self.first_frame, existing=existing
        )

    def memory_stats(self) -> dict[str, int]:
        """Sizes of the bounded state: what the memory-bound tests and benchmarks watch."""
        with self._lock:
            cond = non_cond = full = 0
            for o in self._objects.values():
                cond += len(o.outputs[COND])
                entries = o.outputs[NON_COND].values()
                non_cond += len(entries)
                full += sum(MASKMEM_FEATURES in e for e in entries)
            return {
                "objects": len(self._objects),
                "cond_entries": cond,
                "pointer_entries": non_cond,
                "memory_entries": full,
                "feature_frames": len(self._features),
                "preprocessed_frames": self.frames.cached,
            }
