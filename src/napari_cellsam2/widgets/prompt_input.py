"""Clicks and boxes for the track panel (a mixin: it uses the panel's session, state, cell
selector, prompt layers, status and division state).

A prompt is validated here, on the Qt main thread, with the session's pure checks (a refused
click is removed from the clicks layer at once); adding it and previewing its frame run as one
ordered job, so the main thread never waits for the session lock and a preview never overtakes
its click.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from napari.utils.notifications import show_info
from qtpy.QtCore import QSignalBlocker

from .track_jobs import prompt_and_preview


@dataclass
class NewCell:
    """A request for a new cell (the ``n`` key, a new session). Its ID is taken by the first
    prompt the session accepts for it, inside that prompt's ordered job: a division or a
    detection that runs between the request and the click takes IDs of its own, and the number
    shown at the request would then name one of their cells."""

    id: int | None = None


class PromptInput:
    """Turns what the user adds to the prompt layers into session prompts and previews."""

    _new_cell: NewCell | None = None

    def new_cell(self) -> None:
        """The next click or box starts a new cell; the Cell ID box shows the next free ID.
        Refused while a job runs: the key binding works while the buttons are disabled."""
        if self._ready():
            self.expect_new_cell()
            self.status.setText(f"click the new cell (next free ID: {self.cell.value()})")

    def expect_new_cell(self) -> None:
        self._new_cell = NewCell()
        self._show_cell(self.session.new_object_id())

    def new_cell_hint(self) -> None:
        """After a job that may have taken IDs, show the next free one for a waiting request."""
        if self._new_cell is not None and self._new_cell.id is None and self.session:
            self._show_cell(self.session.new_object_id())

    def _show_cell(self, cell_id: int) -> None:
        """Set the Cell ID box for the user; only the user's own choice ends a request."""
        with QSignalBlocker(self.cell):
            self.cell.setValue(cell_id)

    def cell_chosen(self, _value: int) -> None:
        self._new_cell = None

    def _ready(self) -> bool:
        """A session exists and no job is changing it (clicks would wait for SAM 2)."""
        if self.state.busy:
            show_info("a job is running: wait for it or press Cancel, then try again")
            return False
        return self._require_session() is not None

    def on_click(self, frame: int, x: float, y: float, positive: bool) -> bool:
        """Returns whether the click was taken (the clicks layer drops a refused one)."""
        from ..tracking.prompts import check_points

        if not self._ready():
            return False
        session, label = self.session, 1 if positive else 0
        try:
            self._check_frame(frame)
            prompt = check_points([[x, y]], [label], session.height, session.width)
        except ValueError as exc:
            self._failed(str(exc))
            return False
        if self._dividing:
            self._daughter_clicks.append((frame, x, y))
            if len(self._daughter_clicks) == 2:
                self._finish_divide(frame)
            return True
        self._prompt(self._adder(prompt, frame), frame, (frame, x, y))
        return True

    def on_box(self, frame: int, box: tuple[float, float, float, float]) -> bool:
        from ..tracking.prompts import check_box

        if not self._ready():
            return False
        session = self.session
        try:
            self._check_frame(frame)
            prompt = check_box(box, session.height, session.width)
        except ValueError as exc:
            self._failed(str(exc))
            return False
        self._prompt(self._adder(prompt, frame), frame)
        return True

    def _adder(self, prompt: Any, frame: int) -> Callable[[], None]:
        """What the ordered job runs to add ``prompt``: to the cell in the Cell ID box, or to
        the cell a waiting new-cell request gets (its ID taken there, see :class:`NewCell`)."""
        session, new = self.session, self._new_cell
        if new is None:
            cell = self.cell.value()
            return lambda: session.add_prompt(cell, frame, prompt)

        def add() -> None:
            cell = session.new_object_id() if new.id is None else new.id
            session.add_prompt(cell, frame, prompt)
            new.id = cell

        return add

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.session.num_frames:
            last = self.session.num_frames - 1
            raise ValueError(f"frame {frame} is outside the session's image (frames 0..{last})")

    def _prompt(
        self, add: Callable[[], Any], frame: int, click: tuple[int, float, float] | None = None
    ) -> None:
        """Add the prompt and preview its frame as one ordered job; a prompt the session
        refuses (e.g. a cell that has divided) is reported and its click removed."""

        def refused(exc: Exception) -> None:
            if click is not None and self.prompts is not None:
                self.prompts.forget_click(*click)
            self._failed(str(exc))

        new = self._new_cell
        self.pending_previews += 1
        self.state.run_job(
            prompt_and_preview, self.session, add, frame, on_return=lambda _: self._added(new),
            on_error=refused, on_finish=self._preview_done, busy=False, ordered=True,
        )  # fmt: skip

    def _added(self, new: NewCell | None) -> None:
        """A prompt is in: a new-cell request it answered ends, and the box shows its cell."""
        if new is not None and new is self._new_cell and new.id is not None:
            self._new_cell = None
            self._show_cell(new.id)
        self._refresh()

    def _preview_done(self) -> None:
        self.pending_previews -= 1
