"""The dock's forms are built from the typed configs: the Fine-tune tab's from the training
config, the Track tab's "Detection options" from DetectConfig: same options, same defaults."""

from __future__ import annotations

from dataclasses import fields

import pytest

from napari_cellsam2.tracking.detect_config import DETECT_METHODS, DetectConfig
from napari_cellsam2.training.config import load_config, option_help
from napari_cellsam2.widgets.config_form import SET_BY_DOCK, ConfigForm

pytestmark = pytest.mark.gui


def test_form_defaults_are_the_config_defaults(qtbot):
    form = ConfigForm()
    qtbot.addWidget(form)
    values = form.values()
    defaults = load_config(require_log_dir=False).scratch
    names = {key.removeprefix("scratch.") for key in values}
    assert names == set(defaults) - set(SET_BY_DOCK)  # every option, none invented
    assert all(values[f"scratch.{n}"] == defaults[n] for n in names), values
    # the form's values load back through the config unchanged
    assert load_config(values=values, require_log_dir=False).scratch == defaults
    title, help_text = option_help("num_frames_to_correct")
    assert form.widgets["num_frames_to_correct"].toolTip().endswith(help_text) and title


def test_form_edits_reach_the_config(qtbot):
    form = ConfigForm()
    qtbot.addWidget(form)
    form.widgets["num_epochs"].setValue(7)
    form.widgets["steps_per_epoch"].setValue(12)
    form.widgets["supervise_all_iou"].setChecked(False)
    form.widgets["lora_targets"].setText("q_proj, v_proj")
    cfg = load_config(values=form.values(), require_log_dir=False).scratch
    assert (cfg.num_epochs, cfg.steps_per_epoch, cfg.supervise_all_iou) == (7, 12, False)
    assert list(cfg.lora_targets) == ["q_proj", "v_proj"]
    form.widgets["steps_per_epoch"].setValue(form.widgets["steps_per_epoch"].minimum())
    assert load_config(values=form.values(), require_log_dir=False).scratch.steps_per_epoch is None
    form.widgets["head_lr"].setText("0.002")  # float | None: a number, or empty for None
    assert load_config(values=form.values(), require_log_dir=False).scratch.head_lr == 0.002
    form.widgets["head_lr"].setText("")
    assert load_config(values=form.values(), require_log_dir=False).scratch.head_lr is None
    form.widgets["head_lr"].setText("2e")  # half-typed: one message that names the option
    with pytest.raises(ValueError, match=r"scratch\.head_lr: '2e' is not a number"):
        form.values()


def test_detection_form_is_the_detect_config(qtbot):
    form = ConfigForm(DetectConfig, prefix="detect.", basic=(), skip=())
    qtbot.addWidget(form)
    assert set(form.widgets) == {f.name for f in fields(DetectConfig)}
    assert form.config() == DetectConfig()  # the CLI's defaults
    method = form.widgets["method"]
    assert [method.itemText(i) for i in range(method.count())] == list(DETECT_METHODS)
    method.setCurrentText("grid")
    form.widgets["min_area"].setValue(55)
    form.widgets["min_object_score"].setValue(-2.5)  # a logit: may be negative
    assert form.config() == DetectConfig(method="grid", min_area=55, min_object_score=-2.5)
    form.widgets["nms_iou"].setValue(1.5)
    with pytest.raises(ValueError, match="nms_iou"):
        form.config()
