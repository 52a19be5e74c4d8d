"""The Points (clicks) and Shapes (boxes) layers the track panel creates for prompts.

Clicks are positive by default; the panel's "negative" toggle (key ``x`` flips it) makes the next
clicks negative, drawn red. Each new point or rectangle is handed to a callback with its frame;
one the callback refuses (returns False) is removed again, so the layers show only prompts the
session took.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Points, Shapes
from napari.layers.base._base_constants import ActionType
from qtpy.QtCore import QTimer

POINTS_NAME = "cellsam2 clicks"
BOXES_NAME = "cellsam2 boxes"
POSITIVE, NEGATIVE = "lime", "red"

# frame, x, y, positive -> taken
ClickHandler = Callable[[int, float, float, bool], bool]
# frame, (x0, y0, x1, y1) -> taken
BoxHandler = Callable[[int, tuple[float, float, float, float]], bool]


class PromptLayers:
    """Creates (or reuses) the prompt layers and forwards what the user adds to them."""

    def __init__(self, viewer: Any, on_click: ClickHandler, on_box: BoxHandler) -> None:
        self.viewer = viewer
        self.on_click = on_click
        self.on_box = on_box
        self.positive = True
        self.points = self._layer(POINTS_NAME, Points, size=6, face_color=POSITIVE)
        self.boxes = self._layer(
            BOXES_NAME, Shapes, edge_color="yellow", face_color="transparent", edge_width=1
        )
        self.points.events.data.connect(self._points_changed)
        self.boxes.events.data.connect(self._boxes_changed)

    def _layer(self, name: str, kind: type, **kwargs: Any):
        layers = self.viewer.layers
        if name in layers and isinstance(layers[name], kind):
            return layers[name]
        return self.viewer.add_layer(kind(name=name, ndim=3, **kwargs))

    def set_positive(self, positive: bool) -> None:
        self.positive = positive
        self.points.current_face_color = POSITIVE if positive else NEGATIVE

    def select_points(self) -> None:
        """Make the clicks layer active in add mode (ready for the user's next click)."""
        self.viewer.layers.selection.active = self.points
        self.points.mode = "add"

    def _points_changed(self, event) -> None:
        if event.action != ActionType.ADDED:
            return
        for index in event.data_indices:
            t, y, x = (float(v) for v in self.points.data[index][-3:])
            if not self.on_click(round(t), x, y, self.positive):
                self.forget_click(t, x, y)

    def _boxes_changed(self, event) -> None:
        if event.action != ActionType.ADDED:
            return
        for index in event.data_indices:
            corners = np.asarray(self.boxes.data[index])[:, -3:]
            t = round(float(corners[0, 0]))
            (y0, x0), (y1, x1) = corners[:, 1:].min(0), corners[:, 1:].max(0)
            if not self.on_box(t, (float(x0), float(y0), float(x1), float(y1))):
                self._later(lambda c=corners: self._remove_box(c))

    def forget_click(self, frame: float, x: float, y: float) -> None:
        """Remove a click the session refused (found by position: indices shift as the user
        adds points), after the layer's event that reported it has been handled."""
        self._later(lambda: self._remove_point(np.array([frame, y, x])))

    @staticmethod
    def _later(action: Callable[[], None]) -> None:
        QTimer.singleShot(0, action)

    def _remove_point(self, where: np.ndarray) -> None:
        data = np.asarray(self.points.data)
        hits = np.flatnonzero(np.all(np.isclose(data[:, -3:], where), axis=1)) if len(data) else []
        if len(hits):
            self.points.remove([int(hits[-1])])

    def _remove_box(self, corners: np.ndarray) -> None:
        for index in reversed(range(len(self.boxes.data))):
            box = np.asarray(self.boxes.data[index])[:, -3:]
            if box.shape == corners.shape and np.allclose(box, corners):
                self.boxes.remove([index])
                return
