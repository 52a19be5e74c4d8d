"""The shared training config: seed option names, overrides, values from the GUI, YAML."""

from __future__ import annotations

import pytest

from napari_cellsam2.training.config import ConfigError, load_config


def test_seed_overrides_and_defaults():
    cfg = load_config(
        ["launcher.experiment_log_dir=/tmp/run", "scratch.num_frames=2", "scratch.use_lora=false"]
    )
    assert cfg.scratch.num_frames == 2 and cfg.scratch.use_lora is False
    assert cfg.scratch.num_epochs == 5 and cfg.scratch.max_num_objects == 30
    assert cfg.dataset.data_dir == "../data/moma"  # ${scratch.dataset_name} resolved


def test_values_are_taken_literally():
    """Paths from the dock may hold spaces, '#' or ':' that key=value parsing would mangle."""
    cfg = load_config(values={"launcher.experiment_log_dir": "/a b #1/c: d", "model.base": "x y"})
    assert cfg.launcher.experiment_log_dir == "/a b #1/c: d" and cfg.model.base == "x y"


def test_values_with_dollar_braces_stay_literal_and_survive_a_yaml_round_trip(tmp_path):
    """A folder named like an OmegaConf interpolation is still just a folder."""
    from omegaconf import OmegaConf

    from napari_cellsam2.training.config import to_dataclass

    log, data = "/runs/${x}", "C:\\data\\${y}"
    cfg = load_config(values={"launcher.experiment_log_dir": log, "dataset.data_dir": data})
    assert cfg.launcher.experiment_log_dir == log and cfg.dataset.data_dir == data
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))  # as the training log saves it
    again = to_dataclass(load_config(yaml_file=tmp_path / "config.yaml"))
    assert again.launcher.experiment_log_dir == log and again.dataset.data_dir == data
    # interpolation written as an override still works
    cfg = load_config(["launcher.experiment_log_dir=/r/${scratch.dataset_name}"])
    assert cfg.launcher.experiment_log_dir == "/r/" + cfg.scratch.dataset_name


@pytest.mark.parametrize(
    ("overrides", "values", "match"),
    [
        (["scratch.nope=1"], None, "Key 'nope' not in"),
        (["scratch.num_frames=abc"], None, "scratch.num_frames"),
        (["num_frames"], None, "not of the form key=value"),
        ([], {"scratch.nope": 1}, "unknown config key 'scratch.nope'"),
        ([], {"scratch.num_epochs": "abc"}, "scratch.num_epochs"),
    ],
)
def test_bad_keys_and_types_list_the_valid_keys(overrides, values, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(["launcher.experiment_log_dir=/tmp/run", *overrides], values=values)
    assert "scratch.use_lora" in str(info.value)  # the valid keys are listed


def test_log_dir_is_required_and_yaml_is_read(tmp_path):
    with pytest.raises(ConfigError, match="experiment_log_dir is required"):
        load_config([])
    path = tmp_path / "c.yaml"
    path.write_text("launcher:\n  experiment_log_dir: /tmp/r\nscratch:\n  num_frames: 1\n")
    assert load_config([], path).scratch.num_frames == 1
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([], tmp_path / "missing.yaml")
