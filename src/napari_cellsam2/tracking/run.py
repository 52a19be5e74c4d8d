"""Track a CTC sequence from prompts and write its RES folder (what ``cellsam2 track`` runs)."""

from __future__ import annotations

from collections.abc import Callable, Sized
from pathlib import Path
from typing import Any

from ..ctc import CTCFormatError, CTCSequence, open_path, write_res
from ..ctc.geff import GEFF_ENTRIES, write_geff_with
from ..ctc.writer import RES_ENTRIES, Existing, check_output
from .detect_config import DetectConfig
from .division_config import DivisionConfig
from .new_cells import check_new_cell_options, track_with_new_cells
from .prompt_file import PromptEntry, PromptFileError, read_prompt_file
from .session import TrackingSession

GT_FIRST_FRAME = "gt-first-frame"
AUTO = "auto"


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
    divisions: str | None = None,
    division_config: DivisionConfig | None = None,
    precision: str = "auto",
    progress: bool = False,
    existing: Existing = "refuse",
    geff: str | Path | None = None,
    geff_existing: Existing = "refuse",
    detect: DetectConfig | None = None,
    detect_new_cells: int = 0,
    log: Callable[[str], None] = print,
) -> TrackingSession:
    """Track ``sequence`` (a CTC image folder) and write a validated RES folder to ``out``.

    ``prompts`` is ``"gt-first-frame"`` (every object of the sibling ``NN_GT/TRA`` on the first
    frame becomes a mask prompt), ``"auto"`` (the cells SAM 2 finds on the first frame from a
    grid of clicks, :mod:`.detect` with ``detect``'s options) or a CSV/JSON prompt file
    (``prompt_file``). ``model`` is a
    spec for ``model.load_model`` or an already loaded model; ``precision`` as for
    :class:`TrackingSession`, and so are ``divisions`` (learned, split, off; default learned with
    a division head) and ``division_config``. ``geff``: also write the lineage there as a GEFF
    graph.
    ``detect_new_cells`` N > 0: every N frames, also track the cells found outside the tracked
    masks, forward from that frame (:mod:`.new_cells`, with ``detect``'s options); with any
    ``prompts``.

    Outputs are checked before the model loads, so a run never ends in "cannot write": an
    earlier result is refused unless ``existing`` (``geff_existing``) says otherwise (see
    :data:`~napari_cellsam2.ctc.writer.Existing`) and a folder holding other files always is.
    ``log`` gets the warnings a user must see (random weights, an empty result). Returns the
    session.
    """
    seq = open_path(sequence)
    if seq.images is None:
        raise CTCFormatError(seq.folder, "no image frames (tNNN.tif) to track")
    check_new_cell_options(detect_new_cells, direction)
    check_output(out, RES_ENTRIES, existing)
    if geff is not None:
        if Path(geff).resolve().is_relative_to(Path(out).resolve()):  # it would block every
            # later replacement of the RES (a folder holding other files is refused)
            raise CTCFormatError(geff, f"the GEFF graph must go beside {out}, not inside it")
        check_output(geff, GEFF_ENTRIES, geff_existing)
    entries = None if str(prompts) in (GT_FIRST_FRAME, AUTO) else read_prompt_file(prompts)
    if isinstance(model, str):
        from ..model.loading import load_model

        model = load_model(model, device=device)
    if getattr(model, "is_random", False):
        log(
            f"warning: model {model.description}: random weights make meaningless masks; "
            "use a trained model (e.g. a Hugging Face SAM 2 id) for real data"
        )
    session = TrackingSession(
        model,
        seq.images,
        first_frame=seq.first_frame,
        divisions=divisions,
        division_config=division_config,
        precision=precision,
    )
    if str(prompts) == AUTO:
        found = session.add_detections(0, session.detect(0, detect))
        log(f"found {len(found)} cells on the first frame")
        if not found and not detect_new_cells:
            log(f"warning: no cell was found; {out} will hold an empty result")
    elif entries is None:
        seed_from_gt(session, seq)
    else:
        apply_prompt_entries(session, entries)
    new_cells = (
        track_with_new_cells(session, detect_new_cells, detect, direction=direction)
        if detect_new_cells
        else None
    )
    frames = session.propagate(direction) if new_cells is None else new_cells
    if progress:
        from tqdm.auto import tqdm

        total = len(frames) if isinstance(frames, Sized) else None  # new cells: unknown
        frames = tqdm(frames, total=total, desc=f"tracking {seq.name}", unit="frame")
    for _ in frames:
        pass
    if new_cells is not None:
        n = len(new_cells.new_ids)
        log(f"added {n} new cells on later frames (searched every {detect_new_cells} frames)")
    result = session.result()
    if not len(result.lineage):
        log(f"warning: no cell was tracked; {out} holds an empty result (0 tracks)")
    write_res(out, result.labels, result.lineage, result.first_frame, existing=existing)
    if geff is not None:
        write_geff_with(
            out, existing, geff, result.labels, result.lineage, result.first_frame,
            existing=geff_existing,
        )  # fmt: skip
    return session
