"""A Qt form built from the typed training config (``training.config.ScratchConfig``).

Every option's widget, title, tooltip and default come from the dataclass field, so an option
added to the config appears in the dock with the same default as in the CLI and the API. The
most used options are shown; the rest sit in a collapsed "All options" section.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any

from qtpy.QtCore import QLocale
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..training.config import ScratchConfig

# shown first; the dock sets resolution itself (the loaded model's size)
BASIC = (
    "use_lora",
    "num_epochs",
    "num_frames",
    "max_num_objects",
    "steps_per_epoch",
    "lora_lr",
    "base_lr",
    "vision_lr",
    "augment",
)
SET_BY_DOCK = ("resolution", "dataset_name", "use_wandb")
NONE_VALUE = -1  # int | None options: the spin box's lowest value means None


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(type, optional) of an option's type hint, e.g. ``(int, True)`` for ``int | None``."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return hint, False


def _float_box(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(7)
    box.setRange(0.0, 1e3)
    box.setSingleStep(value / 2 if value else 0.05)
    box.setValue(value)
    return box


def _optional_float_box(value: float | None) -> QLineEdit:
    """``float | None`` options: a number, or empty for None (a spin box has no empty state)."""
    box = QLineEdit("" if value is None else str(value))
    validator = QDoubleValidator(0.0, 1e3, 7, box)
    validator.setLocale(QLocale.c())  # "0.002" and "2e-3", whatever the user's locale
    box.setValidator(validator)
    box.setPlaceholderText("empty: see tooltip")
    return box


def _optional_float(name: str, text: str) -> float | None:
    """The value of an optional float field; a half-typed number is a ValueError naming it."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"scratch.{name}: {text!r} is not a number (empty = default)") from None


def _int_box(value: int | None, optional: bool) -> QSpinBox:
    box = QSpinBox()
    box.setRange(NONE_VALUE if optional else -1_000_000, 1_000_000)
    if optional:
        box.setSpecialValueText("all")
    box.setValue(NONE_VALUE if value is None else value)
    return box


class ConfigForm(QWidget):
    """The ``scratch`` options as widgets; :meth:`values` gives them as dotted config keys."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.widgets: dict[str, QWidget] = {}
        self._kinds: dict[str, tuple[Any, bool]] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        basic, rest = QFormLayout(), QFormLayout()
        options = {f.name: f for f in fields(ScratchConfig) if f.name not in SET_BY_DOCK}
        self._hints = typing.get_type_hints(ScratchConfig)  # resolved once, not per field
        for name in (*BASIC, *sorted(set(options) - set(BASIC))):
            f = options[name]
            widget = self._widget(f)
            title, help_text = f.metadata["title"], f.metadata["help"]
            widget.setToolTip(f"scratch.{name}: {help_text}")
            self.widgets[name] = widget
            (basic if name in BASIC else rest).addRow(title, widget)
        layout.addLayout(basic)
        self.more = QCollapsible("All options")
        inner = QWidget()
        inner.setLayout(rest)
        self.more.addWidget(inner)
        layout.addWidget(self.more)

    def _widget(self, f: Field) -> QWidget:
        kind, optional = _base_type(self._hints[f.name])
        self._kinds[f.name] = (kind, optional)
        value = _default(f)
        if kind is bool:
            box = QCheckBox()
            box.setChecked(bool(value))
            return box
        if kind is int:
            return _int_box(value, optional)
        if kind is float:
            return _optional_float_box(value) if optional else _float_box(float(value))
        if typing.get_origin(kind) is list:
            return QLineEdit(", ".join(value))
        return QLineEdit(str(value))

    def values(self) -> dict[str, object]:
        """Every option of the form as ``scratch.<name>`` -> value (typed as the config); a
        ValueError names an option whose text is not a value."""
        out: dict[str, object] = {}
        for name, widget in self.widgets.items():
            kind, optional = self._kinds[name]
            if kind is bool:
                value: object = widget.isChecked()
            elif kind is int:
                value = None if optional and widget.value() == NONE_VALUE else widget.value()
            elif kind is float and optional:
                value = _optional_float(name, widget.text())
            elif kind is float:
                value = widget.value()
            elif typing.get_origin(kind) is list:
                value = [part.strip() for part in widget.text().split(",") if part.strip()]
            else:
                value = widget.text()
            out[f"scratch.{name}"] = value
        return out
