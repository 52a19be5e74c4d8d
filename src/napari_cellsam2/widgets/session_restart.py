"""Starting a tracking session (a mixin of the track panel), over existing results too: ask
what to do with them, and remember the previous session so that Undo can bring it back.

Starting a session used to empty the tracking layer without a word (256,913 labelled pixels
gone) and Undo then refused ("this snapshot belongs to another session").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtWidgets import QMessageBox, QWidget

from ..ctc.napari_layers import META_KEY, PARENTS_KEY, layer_meta
from .lineage_view import TRACKS_NAME
from .prompt_layers import PromptLayers
from .track_form import division_mode

LABELS_NAME = "cellsam2 tracking"

KEEP_AS_SEED = "seed"  # the new session starts from the labels
KEEP_AS_LAYER = "layer"  # the labels move to a layer of their own, the session starts empty
DISCARD = "discard"  # the session starts empty (Undo brings the labels back)


def labelled_pixels(data: Any) -> int:
    """Labelled pixels of a (T, Y, X) labels array, read a frame at a time."""
    return sum(int(np.count_nonzero(np.asarray(data[t]))) for t in range(data.shape[0]))


def ask_about_results(parent: QWidget, pixels: int, can_seed: bool) -> str | None:
    """Ask what happens to the ``pixels`` labelled pixels of the tracking layer: one of
    :data:`KEEP_AS_SEED` (offered when the layer fits the new image), :data:`KEEP_AS_LAYER` or
    :data:`DISCARD`; None when the user cancels."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Start session")
    box.setText(f"The tracking layer holds {pixels:,} labelled pixels. What happens to them?")
    box.setInformativeText(
        "Keep: the new session starts from these labels. Separate layer: they stay beside the "
        "new session, untouched. Discard: the new session starts empty (Undo brings them back)."
    )
    choices = {}
    if can_seed:
        choices[box.addButton("Keep", QMessageBox.ButtonRole.AcceptRole)] = KEEP_AS_SEED
    choices[box.addButton("Separate layer", QMessageBox.ButtonRole.AcceptRole)] = KEEP_AS_LAYER
    choices[box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)] = DISCARD
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec_()
    return choices.get(box.clickedButton())


def _free_name(viewer: Any, name: str) -> str:
    candidate, n = f"{name} (previous)", 2
    while candidate in viewer.layers:
        candidate, n = f"{name} (previous {n})", n + 1
    return candidate


def set_aside(viewer: Any, layer: Any) -> None:
    """Rename the tracking layer (and the lineage layer drawn from it) so that the new session
    makes its own; their data and metadata (parent links) stay as they are."""
    if TRACKS_NAME in viewer.layers:
        tracks = viewer.layers[TRACKS_NAME]
        tracks.name = _free_name(viewer, TRACKS_NAME)
    layer.name = _free_name(viewer, layer.name)


@dataclass(frozen=True)
class Restart:
    """What Undo needs to return to the session before a restart: the session itself, its own
    undo step, and the tracking layer's data and metadata (the session's labels array is left
    untouched by the restart, so restoring is a reference swap, not a copy)."""

    session: Any
    undo: Any
    layer: Any
    data: Any
    metadata: dict

    def revert(self, viewer: Any) -> None:
        """Put the previous labels back into the tracking layer (re-added if removed)."""
        self.layer.data, self.layer.metadata = self.data, self.metadata
        if self.layer not in viewer.layers:
            viewer.add_layer(self.layer)


class SessionStart:
    """Start session: the track panel's ``start_session`` and the layers it sets up."""

    def start_session(self, keep_labels: bool = False) -> None:
        """A new session on the chosen image. Results in the tracking layer are never dropped
        unasked: ``keep_labels`` (a new model) carries them over, otherwise the user chooses.
        A failed start ends the previous session, so nothing acts on another image."""
        from ..tracking import TrackingSession  # already imported by the model's loading job

        self.cancel_divide()  # daughters clicked for the old session's cell mean nothing here
        image = self.image.layer()
        if self.state.model is None or image is None:
            self.session = self._undo = None
            self._failed("load a model (Model panel) and choose a (T, Y, X) image layer first")
            return
        try:  # a mistyped option is the form's problem: the running session stays
            division_config = self.division_options.config()
        except ValueError as exc:
            self._failed(f"no new session: {exc}")
            return
        first = int((image.metadata.get(META_KEY) or {}).get("first_frame", 0))
        try:
            session = TrackingSession(
                self.state.model, image.data,
                divisions=division_mode(self.divisions.currentText()),
                division_config=division_config,
                first_frame=first, precision=self.precision.currentText(),
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            self.session = self._undo = None
            self._failed(f"no session: '{image.name}' cannot be tracked: {exc}")
            return
        viewer = self.state.viewer
        old = viewer.layers[LABELS_NAME] if LABELS_NAME in viewer.layers else None  # noqa: SIM401
        fits = old is not None and old.data.shape == session.labels.shape
        keep = keep_labels and fits  # a new model for the same movie: nothing to ask
        pixels = labelled_pixels(old.data) if old is not None and not keep else 0
        choice = KEEP_AS_SEED if keep else DISCARD
        if pixels:
            choice = ask_about_results(self, pixels, fits)
            if choice is None:
                self.status.setText("start cancelled: nothing changed")
                return
        previous, self._undo = self._undo, None  # snapshots cannot cross sessions
        if choice == KEEP_AS_LAYER:
            set_aside(viewer, old)  # nothing to bring back: the labels stay on show
            old = None
        elif pixels:  # the user was asked: Undo can go back
            self._undo = Restart(self.session, previous, old, old.data, dict(old.metadata))
        self.session = session
        self._show_labels(session, image.name, first, old, keep=choice == KEEP_AS_SEED)
        self._setup_prompts()
        self.expect_new_cell()
        self.status.setText(f"session on '{image.name}' ({session.num_frames} frames)")

    def _show_labels(self, session: Any, image: str, first: int, old: Any, keep: bool) -> None:
        """Point the tracking layer at the session's labels; kept labels are copied into the
        session first, in the ordered worker (after any preview of the previous session)."""
        meta = layer_meta("res", sequence=image, first_frame=first)
        meta[PARENTS_KEY] = {}
        if old is None:
            self.labels_layer = self.state.viewer.add_labels(
                session.labels, name=LABELS_NAME, metadata=meta
            )
            return
        self.labels_layer = old  # reused: removing a layer costs a full GC on the GUI thread
        if not keep:
            old.data, old.metadata = session.labels, meta
            return

        def adopted(_result: Any) -> None:
            if self.session is session:
                old.data = session.labels
                self.new_cell_hint()

        self.state.run_job(session.adopt_labels, old.data, on_return=adopted, ordered=True)

    def _reserve_painted(self, event: Any) -> None:
        """A label painted on the tracking layer is the user's cell: the session reserves its
        ID (in the ordered worker; the layer is read-only while a job runs, so nothing that
        hands out IDs can run in between), and a waiting new cell shows the next free one."""
        # each history atom (napari's masked paint atom or data_setitem's 3-tuple) ends with the
        # value or values painted
        top = max((int(np.max(atom[-1])) for atom in event.value), default=0)
        session = self.session
        if session is not None and top > 0:
            self.state.run_job(
                session.reserve_ids_up_to, top, on_return=lambda _: self.new_cell_hint(),
                ordered=True, busy=False,
            )  # fmt: skip

    def _setup_prompts(self) -> None:
        viewer = self.state.viewer
        if self.prompts is None or self.prompts.points not in viewer.layers:
            self.prompts = PromptLayers(viewer, self.on_click, self.on_box)
        self.prompts.set_positive(not self.negative.isChecked())
        self.labels_layer.events.paint.disconnect(self._reserve_painted)  # a reused layer
        self.labels_layer.events.paint.connect(self._reserve_painted)
        for layer in (self.prompts.points, self.labels_layer):
            layer.bind_key("n", lambda _layer: self.new_cell(), overwrite=True)
            layer.bind_key("x", lambda _layer: self.negative.toggle(), overwrite=True)
        self.prompts.select_points()
