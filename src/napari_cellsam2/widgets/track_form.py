"""The controls of the track panel (layout only; the panel wires the behaviour).

It imports neither torch nor the tracker, so that opening the dock takes about a second
instead of six; the model's loading job imports them in its worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..tracking.detect_config import DetectConfig
from ..tracking.division_config import DIVISION_MODES, DivisionConfig
from .config_form import ConfigForm
from .layer_combo import LayerCombo

# Copies of tracking.DIRECTIONS and model.device.PRECISIONS, which import torch (a test keeps
# them equal).
DIRECTIONS = ("forward", "backward", "both")
PRECISIONS = ("auto", "fp32", "bf16")
AUTO_DIVISIONS = "auto"  # the model's default: learned with a division head, else off


def division_mode(text: str) -> str | None:
    """The session's ``divisions`` for the combo's text (None: the model's default)."""
    return None if text == AUTO_DIVISIONS else text


def _button(text: str, slot) -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(slot)
    return button


def build_track_form(
    panel: Any, viewer: Any, actions: list[tuple[str, Callable[[], None]]]
) -> QWidget:
    """Create the panel's controls as its attributes and lay them out on it."""
    panel.image = LayerCombo(viewer, Image)
    panel.seed_layer = LayerCombo(viewer, Labels)
    panel.cell = QSpinBox()
    panel.cell.setRange(1, 65535)
    panel.negative = QCheckBox("negative clicks (x)")
    panel.divisions = QComboBox()
    panel.divisions.addItems([AUTO_DIVISIONS, *DIVISION_MODES])
    panel.divisions.setToolTip(
        "learned: the model's division head (auto picks it when the model has one); "
        "learned+split: the head, then the split rule for the cells it did not divide; split: a "
        "tracked mask that falls apart into two; off: divide by hand"
    )
    # the thresholds of both division rules, from the same dataclass as the CLI's flags
    panel.division_options = ConfigForm(
        DivisionConfig, prefix="division.", basic=(), skip=(), more_title="Division options"
    )
    panel.direction = QComboBox()
    panel.direction.addItems(DIRECTIONS)
    panel.direction.setCurrentText("both")
    panel.new_cells = QSpinBox()  # cellsam2 track --detect-new-cells N
    panel.new_cells.setRange(0, 100_000)
    panel.new_cells.setSpecialValueText("off")
    panel.new_cells.setPrefix("every ")
    panel.new_cells.setSuffix(" frames")
    panel.new_cells.setToolTip(
        "while tracking forward, every N frames also track the cells found outside the tracked "
        "masks (Detection options), from the frame where they appear; off: only your cells"
    )
    panel.precision = QComboBox()
    panel.precision.addItems(PRECISIONS)
    panel.precision.setToolTip("auto: bf16 on CUDA, fp32 elsewhere; fp32: exact but slower on GPUs")
    panel.start_frame, panel.end_frame = QSpinBox(), QSpinBox()
    for box in (panel.start_frame, panel.end_frame):
        box.setRange(-1, 1_000_000)
        box.setValue(-1)
        box.setSpecialValueText("auto")
    # "Detect cells" options, from the same dataclass as the CLI's --detect-* flags
    panel.detect_options = ConfigForm(
        DetectConfig, prefix="detect.", basic=(), skip=(), more_title="Detection options"
    )
    panel.status = QLabel("load a model, pick the image, start a session")
    panel.status.setWordWrap(True)
    panel.bar = QProgressBar()  # tracking progress, here as in the other tabs
    panel.bar.setFormat("%v / %m frames")
    panel.track_button = _button("Track", panel.track)
    panel.cancel_button = _button("Cancel", panel.cancel)
    panel.cancel_button.setEnabled(False)

    grid = QGridLayout()
    panel.action_buttons: list[QPushButton] = []
    for i, (text, slot) in enumerate(actions):
        panel.action_buttons.append(_button(text, slot))
        grid.addWidget(panel.action_buttons[-1], i // 2, i % 2)
    grid.addWidget(panel.track_button, 4, 0)
    grid.addWidget(panel.cancel_button, 4, 1)
    form = QFormLayout(panel)
    form.addRow("Image", panel.image)
    form.addRow("Seed labels", panel.seed_layer)
    form.addRow("Cell ID", panel.cell)
    form.addRow("", panel.negative)
    form.addRow("Divisions", panel.divisions)
    form.addRow(panel.division_options)
    form.addRow("Direction", panel.direction)
    form.addRow("New cells", panel.new_cells)
    form.addRow("Precision", panel.precision)
    form.addRow("From frame", panel.start_frame)
    form.addRow("To frame", panel.end_frame)
    form.addRow(grid)
    form.addRow(panel.detect_options)
    form.addRow(panel.bar)
    form.addRow(panel.status)
    return panel
