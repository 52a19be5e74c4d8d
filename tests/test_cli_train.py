"""`cellsam2 train` / `cellsam2-train` / `accelerate launch -m napari_cellsam2.training`.

The seed's override style end to end on a synthetic CTC dataset with the tiny random model and
the real objective: train, resume, load the result and track with it. One test launches two
data-parallel CPU processes through accelerate (the slowest test here, ~30-60 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_cellsam2.cli import main, train_main
from napari_cellsam2.ctc import open_sequence
from napari_cellsam2.datasets import write_dataset
from napari_cellsam2.model.heads import centre_head, division_head
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import TrackingSession
from napari_cellsam2.training.config import load_config

FAST = [  # keep the real objective cheap: few objects, no correction clicks, one val clip
    "scratch.max_num_objects=2",
    "scratch.max_num_bkgd_objects=1",
    "scratch.num_correction_pt_per_frame=0",
    "scratch.val_steps=1",
    "model.device=cpu",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """train/val/test with one 4-frame mother-machine sequence each (3 two-frame clips)."""
    return write_dataset(
        tmp_path_factory.mktemp("data") / "mm", "mother-machine", sequences=3, frames=4, seed=0
    )


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]


def seed_overrides(log: Path, data: Path, epochs: int) -> list[str]:
    return [
        f"launcher.experiment_log_dir={log}",
        f"scratch.num_epochs={epochs}",
        "scratch.num_frames=2",
        "scratch.use_lora=true",
        "model.base=tiny",
        f"dataset.data_dir={data}",
        "scratch.resolution=256",
        "scratch.steps_per_epoch=2",
        *FAST,
    ]


def test_train_resume_and_track_with_the_result(tmp_path, data_dir, capsys):
    log = tmp_path / "run"
    assert main(["train", *seed_overrides(log, data_dir, 2)]) == 0
    out = capsys.readouterr().out
    # rank-32 adapters (4 x 69,312) + trained head copies (132,997) + no-memory/no-object tokens
    assert "trainable 410,693 / 2,710,663 (15.15%)" in out
    ckpts = log / "checkpoints"
    assert {p.name for p in ckpts.iterdir() if p.is_dir()} == {"epoch_001", "epoch_002", "best"}
    assert json.loads((ckpts / "last.json").read_text())["checkpoint"] == "epoch_002"
    first = records(log)
    # validation on the tracking path every epoch; best = the highest val_TRA
    validation = [r for r in first if r["type"] == "validation" and r["epoch"] > 0]
    assert all(0 <= r["val_kept_iou"] <= 1 and 0 <= r["val_TRA"] <= 1 for r in validation)
    assert all(r["val_SEG"] is not None and r["val_DET"] is not None for r in validation)
    best = json.loads((ckpts / "best" / "best.json").read_text())
    assert best["val_TRA"] == max(r["val_TRA"] for r in validation)
    assert best["epoch"] == next(r["epoch"] for r in validation if r["val_TRA"] == best["val_TRA"])
    assert f"best checkpoint: epoch {best['epoch']}" in out
    assert not (ckpts / "best" / "train_state.pt").exists()
    assert load_model(ckpts / "best", "cpu").kind == "lora"
    steps = [r for r in first if r["type"] == "step"]
    assert [(r["epoch"], r["global_step"]) for r in steps] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    # epoch 0: the base model, validated before the first step
    assert [r["epoch"] for r in first if r["type"] == "validation"] == [0, 1, 2]
    assert "base model: val loss" in out
    saved = load_config([], log / "config.yaml")  # the resolved config round-trips
    assert saved.scratch.num_epochs == 2 and saved.dataset.data_dir == str(data_dir)

    resume = [*seed_overrides(log, data_dir, 3), "launcher.resume=true"]
    assert train_main(resume) == 0
    new = records(log)[len(first) :]
    assert {r["epoch"] for r in new if "epoch" in r and r["type"] != "start"} == {3}
    assert [r["global_step"] for r in new if r["type"] == "step"] == [5, 6]
    assert new[0]["type"] == "start" and new[0]["start_epoch"] == 3
    state = torch.load(ckpts / "epoch_003" / "train_state.pt", weights_only=True)
    # AdamW's per-parameter step count continues from the 4 steps before the resume
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {6}

    loaded = load_model(ckpts / "epoch_003", "cpu")
    assert loaded.kind == "lora" and loaded.image_size == 256
    seq = open_sequence(data_dir / "test" / "CTC" / "01")
    frames = np.stack([seq.images[t] for t in range(len(seq.images))])
    labels0 = np.asarray(seq.gt.tra.masks[0])
    session = TrackingSession(loaded, frames)
    ids = session.seed_from_labels(0, labels0)
    assert len(list(session.propagate())) == len(frames)
    assert session.labels.shape == frames.shape and set(ids) <= set(np.unique(session.labels))


def test_full_fine_tune_from_yaml_config(tmp_path, data_dir):
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "scratch": {"use_lora": False, "num_epochs": 1, "num_frames": 1},
                "model": {"base": "tiny"},
                "dataset": {"data_dir": str(data_dir)},
            }
        )
    )
    log = tmp_path / "full"
    overrides = [f"launcher.experiment_log_dir={log}", "scratch.resolution=256"]
    overrides += ["scratch.steps_per_epoch=1", *FAST]
    assert main(["train", "--config", str(config), *overrides]) == 0
    loaded = load_model(log / "checkpoints" / "epoch_001", "cpu")
    assert loaded.kind == "checkpoint" and loaded.image_size == 256


def test_bad_overrides_and_data_exit_2_with_clear_messages(tmp_path, capsys):
    assert main(["train", f"launcher.experiment_log_dir={tmp_path}", "scratch.num_frame=2"]) == 2
    err = capsys.readouterr().err
    assert "num_frame" in err and "scratch.num_frames" in err  # lists the valid keys
    assert train_main([f"launcher.experiment_log_dir={tmp_path}", "scratch.num_epochs=two"]) == 2
    assert "scratch.num_epochs" in capsys.readouterr().err
    missing = tmp_path / "no-data"
    log = tmp_path / "log"
    code = main(["train", f"launcher.experiment_log_dir={log}", f"dataset.data_dir={missing}"])
    assert code == 2 and str(missing) in capsys.readouterr().err
    assert not log.exists()  # nothing written before the data was found
    code = main(["train", f"launcher.experiment_log_dir={log}", "launcher.resume=true"])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err


def launch_two_processes(overrides: list[str]) -> None:
    """``accelerate launch`` of the training CLI over 2 CPU processes; fails the test on error."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "-m", "napari_cellsam2.training", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_processes_that_log_different_loss_parts_train_on(tmp_path, data_dir):
    """One-frame clips prompted by clicks or masks: ``kept_iou`` is a loss part only where a
    click's prediction held a cell, so on the same step one process may log it and the other
    not. Averaging the parts must not turn that into a collective mismatch (it crashed)."""
    log = tmp_path / "parts"
    overrides = seed_overrides(log, data_dir, 1)
    overrides += ["scratch.num_frames=1", "scratch.prob_point=0.5", "scratch.prob_box=0"]
    overrides += ["scratch.prob_mask=0.5", "scratch.resolution=128", "scratch.steps_per_epoch=1"]
    launch_two_processes(overrides)
    steps = [r for r in records(log) if r["type"] == "step"]
    assert len(steps) == 1 and "dice" in steps[0]["parts"]


def test_accelerate_two_process_data_parallel(tmp_path, data_dir):
    """Slowest test (~30-60 s on 2 cores): DDP over 2 CPU processes via `accelerate launch`.

    Each process gets half of the 3 clips per epoch (2 steps, the last batch padded), the loss
    is averaged over processes and only the main process writes logs and checkpoints.
    """
    log = tmp_path / "ddp"
    overrides = seed_overrides(log, data_dir, 1)
    overrides = [o for o in overrides if not o.startswith("scratch.steps_per_epoch")]
    launch_two_processes(overrides)
    recs = records(log)
    starts = [r for r in recs if r["type"] == "start"]
    assert len(starts) == 1 and starts[0]["num_processes"] == 2
    assert starts[0]["steps_per_epoch"] == 2  # ceil(3 clips / 2 processes)
    assert [r["global_step"] for r in recs if r["type"] == "step"] == [1, 2]
    assert recs[-1]["type"] == "done" and not recs[-1]["cancelled"]
    meta = json.loads((log / "checkpoints" / "epoch_001" / "train_state.json").read_text())
    assert meta["num_processes"] == 2
    assert load_model(log / "checkpoints" / "epoch_001", "cpu").kind == "lora"


def test_cellsam2_heads_are_trained_saved_and_resumed(tmp_path, data_dir, capsys):
    log = tmp_path / "heads"
    heads = [
        "scratch.pred_div_scores=true",
        "scratch.pred_heatmap=true",
        "scratch.val_tracking_sequences=0",  # speed: the heads, not validation, are tested
        "scratch.validate_first=false",
    ]
    assert main(["train", *seed_overrides(log, data_dir, 1), *heads]) == 0
    out = capsys.readouterr().out
    assert "division head: freshly initialised (tiny has none)" in out
    assert "cell-centre heatmap head: freshly initialised" in out
    steps = [r for r in records(log) if r["type"] == "step"]
    assert all("div" in r["parts"] and "heatmap" in r["parts"] for r in steps)
    first = load_model(log / "checkpoints" / "epoch_001", "cpu").model
    assert division_head(first) is not None and centre_head(first) is not None

    resume = [*seed_overrides(log, data_dir, 2), *heads, "launcher.resume=true"]
    assert train_main(resume) == 0
    assert "freshly initialised" not in capsys.readouterr().out  # the saved heads continue
    second = load_model(log / "checkpoints" / "epoch_002", "cpu").model
    before, after = centre_head(first).state_dict(), centre_head(second).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # trained on


def test_heads_only_leaves_sam2_unchanged(tmp_path, data_dir, capsys):
    log = tmp_path / "heads_only"
    overrides = [
        *seed_overrides(log, data_dir, 1),
        "scratch.use_lora=false",
        "scratch.val_tracking_sequences=0",
        "scratch.validate_first=false",
        "scratch.pred_div_scores=true",
        "scratch.heads_only=true",
    ]
    assert main(["train", *overrides]) == 0
    trained = load_model(log / "checkpoints" / "epoch_001", "cpu").model
    base = load_model("tiny", "cpu").model
    head = division_head(trained)
    count = sum(p.numel() for p in head.parameters())
    assert f"trainable {count:,} /" in capsys.readouterr().out
    for name, value in base.state_dict().items():
        assert torch.equal(trained.state_dict()[name], value), name
    assert main(["train", *overrides[:-2], "scratch.heads_only=true"]) == 2  # no head to train
