"""A Qt form built from a typed config dataclass: the training options
(``training.config.ScratchConfig``, the Fine-tune tab), and the Track tab's division thresholds
(``tracking.division_config.DivisionConfig``) and detection options
(``tracking.detect_config.DetectConfig``, "Detect cells" and New cells).

Every option's widget, title, tooltip and default come from the dataclass field (its ``help``,
and ``title`` and ``choices`` where given), so an option added to the config appears in the dock
with the same default as in the CLI and the API. The most used options are shown; the rest sit
in a collapsed section.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, fields
from typing import Any

from qtpy.QtCore import QLocale
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
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


def _title(f: Field) -> str:
    return f.metadata.get("title") or f.name.replace("_", " ").capitalize()


def _float_box(value: float, signed: bool) -> QDoubleSpinBox:
    """A float option; ``signed`` (field metadata) for thresholds on logits, which may be < 0."""
    box = QDoubleSpinBox()
    box.setDecimals(7)
    box.setRange(-1e3 if signed else 0.0, 1e3)
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


def _optional_float(key: str, text: str) -> float | None:
    """The value of an optional float field; a half-typed number is a ValueError naming it."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not a number (empty = default)") from None


def _int_box(value: int | None, optional: bool) -> QSpinBox:
    box = QSpinBox()
    box.setRange(NONE_VALUE if optional else -1_000_000, 1_000_000)
    if optional:
        box.setSpecialValueText("all")
    box.setValue(NONE_VALUE if value is None else value)
    return box


class ConfigForm(QWidget):
    """A config dataclass's options as widgets (by default the ``scratch`` training options);
    :meth:`values` gives them as ``prefix + name`` keys, :meth:`config` as the dataclass.

    ``basic`` options are shown, the others sit in the collapsed ``more_title`` section, and
    ``skip`` options are left out (the dock sets them)."""

    def __init__(
        self,
        config: type = ScratchConfig,
        prefix: str = "scratch.",
        basic: Sequence[str] = BASIC,
        skip: Sequence[str] = SET_BY_DOCK,
        more_title: str = "All options",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.config_type, self.prefix = config, prefix
        self.widgets: dict[str, QWidget] = {}
        self._kinds: dict[str, tuple[Any, bool]] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        basic_rows, rest = QFormLayout(), QFormLayout()
        options = {f.name: f for f in fields(config) if f.name not in skip}
        self._hints = typing.get_type_hints(config)  # resolved once, not per field
        for name in (*basic, *sorted(set(options) - set(basic))):
            f = options[name]
            widget = self._widget(f)
            widget.setToolTip(f"{prefix}{name}: {f.metadata['help']}")
            self.widgets[name] = widget
            (basic_rows if name in basic else rest).addRow(_title(f), widget)
        layout.addLayout(basic_rows)
        self.more = QCollapsible(more_title)
        inner = QWidget()
        inner.setLayout(rest)
        self.more.addWidget(inner)
        layout.addWidget(self.more)

    def _widget(self, f: Field) -> QWidget:
        kind, optional = _base_type(self._hints[f.name])
        self._kinds[f.name] = (kind, optional)
        value = _default(f)
        if f.metadata.get("choices"):
            combo = QComboBox()
            combo.addItems([str(c) for c in f.metadata["choices"]])
            combo.setCurrentText(str(value))
            return combo
        if kind is bool:
            box = QCheckBox()
            box.setChecked(bool(value))
            return box
        if kind is int:
            return _int_box(value, optional)
        if kind is float:
            if optional:
                return _optional_float_box(value)
            return _float_box(float(value), bool(f.metadata.get("signed")))
        if typing.get_origin(kind) is list:
            return QLineEdit(", ".join(value))
        return QLineEdit(str(value))

    def values(self) -> dict[str, object]:
        """Every option of the form as ``<prefix><name>`` -> value (typed as the config); a
        ValueError names an option whose text is not a value."""
        out: dict[str, object] = {}
        for name, widget in self.widgets.items():
            kind, optional = self._kinds[name]
            if isinstance(widget, QComboBox):
                value: object = widget.currentText()
            elif kind is bool:
                value = widget.isChecked()
            elif kind is int:
                value = None if optional and widget.value() == NONE_VALUE else widget.value()
            elif kind is float and optional:
                value = _optional_float(self.prefix + name, widget.text())
            elif kind is float:
                value = widget.value()
            elif typing.get_origin(kind) is list:
                value = [part.strip() for part in widget.text().split(",") if part.strip()]
            else:
                value = widget.text()
            out[self.prefix + name] = value
        return out

    def config(self) -> Any:
        """The form's options as the config dataclass (options it leaves out keep their
        defaults); a ValueError says which value the dataclass refuses."""
        values = self.values()
        return self.config_type(**{k.removeprefix(self.prefix): v for k, v in values.items()})
