"""Clicks and boxes for the track panel (a mixin: it uses the panel's session, state, cell
selector, prompt layers, status and division state).

A prompt is validated here, on the Qt main thread, with the session's pure checks (a refused
click is removed from the clicks layer at once); adding it and previewing its frame run as one
ordered job, so the main thread never waits for the session lock and a preview never overtakes
its click.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_info

from .track_jobs import prompt_and_preview


class PromptInput:
    """Turns what the user adds to the prompt layers into session prompts and previews."""

    def _ready(self) -> bool:
        """A session exists and no job is changing it (clicks would wait for SAM 2)."""
        if self.state.busy:
            show_info("a job is running: wait for it or press Cancel, then click again")
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
        cell = self.cell.value()
        self._prompt(lambda: session.add_prompt(cell, frame, prompt), frame, (frame, x, y))
        return True

    def on_box(self, frame: int, box: tuple[float, float, float, float]) -> bool:
        from ..tracking.prompts import check_box

        if not self._ready():
            return False
        session, cell = self.session, self.cell.value()
        try:
            self._check_frame(frame)
            prompt = check_box(box, session.height, session.width)
        except ValueError as exc:
            self._failed(str(exc))
            return False
        self._prompt(lambda: session.add_prompt(cell, frame, prompt), frame)
        return True

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

        self.pending_previews += 1
        self.state.run_job(
            prompt_and_preview, self.session, add, frame, on_return=lambda _: self._refresh(),
            on_error=refused, on_finish=self._preview_done, busy=False, ordered=True,
        )  # fmt: skip

    def _preview_done(self) -> None:
        self.pending_previews -= 1
