"""Track a CTC sequence from prompts and write its RES folder (what ``cellsam2 track`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..ctc import CTCFormatError, CTCSequence, open_path
from .prompt_file import PromptEntry, PromptFileError, read_prompt_file
from .session import TrackingSession

GT_FIRST_FRAME = "gt-first-frame"


def seed_from_gt(session: TrackingSession, seq: CTCSequence) -> list[int]:
    """Seed every object of the GT TRA frame that matches the first image frame (mask prompts)."""
    tra = seq.gt.tra if seq.gt else None
    if tra is None:
        raise CTCFormatError(
            seq.folder.parent / f"{seq.name}_GT",
            "no GT TRA next to the sequence; '--prompts gt-first-frame' needs it (or pass a "
            "prompt file)",
        )
    first = seq.first_frame
    if first not in tra.masks.indices:
        raise CTCFormatError(tra.folder, f"GT TRA has no frame {first} (the first image frame)")
    return session.seed_from_labels(0, tra.masks.frame(tra.masks.indices.index(first)))


def apply_prompt_entries(session: TrackingSession, entries: list[PromptEntry]) -> None:
    """Add file prompts (CTC frame indices) to the session; errors name the file and line."""
    first, last = session.first_frame, session.first_frame + session.num_frames - 1
    for e in entries:
        if not first <= e.frame <= last:
            raise PromptFileError(
                f"{e.where}: frame {e.frame} is not in the sequence (frames {first}..{last})"
            )
        try:
            session.add_prompt(e.object_id, e.frame - first, e.prompt)
        except ValueError as exc:
            raise PromptFileError(f"{e.where}: {exc}") from None


def track_ctc_sequence(
    sequence: str | Path,
    prompts: str | Path,
    model: Any,
    out: str | Path,
    *,
    device: str = "auto",
    direction: str = "both",
    auto_divide: bool = False,
    precision: str = "auto",
    progress: bool = False,
) -> TrackingSession:
    """Track ``sequence`` (a CTC image folder) and write a validated RES folder to ``out``.

    ``prompts`` is ``"gt-first-frame"`` (every object of the sibling ``NN_GT/TRA`` on the first
    frame becomes a mask prompt) or a CSV/JSON prompt file (``prompt_file``). ``model`` is a
    spec for ``model.load_model`` or an already loaded model; ``precision`` as for
    :class:`TrackingSession`. Returns the session.
    """
    seq = open_path(sequence)
    if seq.images is None:
        raise CTCFormatError(seq.folder, "no image frames (tNNN.tif) to track")
    entries = None if str(prompts) == GT_FIRST_FRAME else read_prompt_file(prompts)
    if isinstance(model, str):
        from ..model.loading import load_model

        model = load_model(model, device=device)
    session = TrackingSession(
        model,
        seq.images,
        first_frame=seq.first_frame,
        auto_divide=auto_divide,
        precision=precision,
    )
    if entries is None:
        seed_from_gt(session, seq)
    else:
        apply_prompt_entries(session, entries)
    frames = session.propagate(direction)
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=len(frames), desc=f"tracking {seq.name}", unit="frame")
    for _ in frames:
        pass
    session.write_res(out)
    return session
