"""The training loop's Python API: events, checkpoints, cancel, resume, failures, parameter modes.

A tiny random SAM 2 and in-memory mother-machine clips keep every run to a few CPU seconds.
Where the test is about the loop rather than SAM 2's loss, a cheap stand-in objective (a
per-pixel foreground loss on the image features) replaces ``clip_loss``.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from napari_cellsam2.ctc import Lineage
from napari_cellsam2.datasets import mother_machine
from napari_cellsam2.model.heads import attach_centre_head, attach_division_head, heads_of
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.model.tiny import build_random_model, hiera_tiny_config, tiny_config
from napari_cellsam2.training.config import ScratchConfig, load_config
from napari_cellsam2.training.data import CTCClipDataset
from napari_cellsam2.training.events import (
    CheckpointEvent,
    DoneEvent,
    EpochEvent,
    ErrorEvent,
    StartEvent,
    StepEvent,
    ValidationEvent,
)
from napari_cellsam2.training.loop import TrainingError, last_checkpoint, lr_factor, train
from napari_cellsam2.training.params import (
    apply_lora,
    build_param_groups,
    count_parameters,
    freeze_encoder,
)

RES = 128  # below the tiny model's 256: also exercises the resolution rebuild


def clips(num_frames: int = 2, augment: bool = True, seed: int = 0) -> CTCClipDataset:
    """Clips of a 5-frame, 96x24 synthetic mother machine with two divisions."""
    seq = mother_machine(frames=5, height=96, width=24, seed=seed, doubling_frames=3)
    lineage = Lineage.from_labels(seq.labels, seq.parents)
    return CTCClipDataset.from_arrays(
        seq.images,
        seq.labels,
        lineage,
        num_frames=num_frames,
        resolution=RES,
        max_num_objects=2,
        max_num_bkgd_objects=1,
        augment=augment,
        seed=0,
    )


def config(log_dir: Path, *overrides: str):
    return load_config(
        [
            f"launcher.experiment_log_dir={log_dir}",
            "model.base=tiny",
            "model.device=cpu",
            f"scratch.resolution={RES}",
            "scratch.num_frames=2",
            "scratch.num_epochs=2",
            "scratch.steps_per_epoch=2",
            "scratch.num_correction_pt_per_frame=0",
            *overrides,
        ]
    )


def feature_loss(model, batch, scratch, generator):
    """Stand-in objective: foreground of each frame from the lowest-resolution features."""
    pixels = batch.pixel_values.flatten(0, 1)
    features = model.get_image_features(pixels).fpn_hidden_states[-1]  # (HW, B*T, C)
    size = pixels.shape[-1] // 16
    fg = F.adaptive_avg_pool2d(batch.targets.amax(2).flatten(0, 1)[:, None], size)
    loss = F.binary_cross_entropy_with_logits(features.mean(-1), fg.flatten(1).T)
    return loss, {"bce": loss.item(), "total": loss.item()}


def run(cfg, **kwargs) -> list:
    return list(train(cfg, **kwargs))


def of(events, kind) -> list:
    return [e for e in events if isinstance(e, kind)]


def metrics(log_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


# ---- full runs ------------------------------------------------------------------------------
def test_lora_run_trains_adapters_only_and_checkpoints_load(tmp_path):
    """Real objective: events in order, base weights untouched, adapters learned, checkpoint
    loads as a model whose adapted layers differ from the base and the rest match it."""
    log = tmp_path / "run"
    events = run(
        config(log, "scratch.num_epochs=1"), dataset=clips(), val_dataset=clips(augment=False)
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "StartEvent", "ValidationEvent", "StepEvent", "StepEvent", "EpochEvent",
        "ValidationEvent", "CheckpointEvent", "DoneEvent",
    ]  # fmt: skip
    assert [v.epoch for v in of(events, ValidationEvent)] == [0, 1]  # 0: the base model
    start = events[0]
    assert start.mode == "lora" and 0 < start.trainable < start.total_params
    steps = of(events, StepEvent)
    assert [s.global_step for s in steps] == [1, 2]
    assert all(
        math.isfinite(s.loss) and {"focal", "dice", "iou", "obj"} <= set(s.parts) for s in steps
    )
    assert steps[0].lr > steps[1].lr  # cosine decay towards min_lr_ratio
    assert all(math.isfinite(v.val_loss) for v in of(events, ValidationEvent))
    done = events[-1]
    assert done == DoneEvent(log / "checkpoints" / "epoch_001", cancelled=False)
    assert last_checkpoint(log) == done.path

    base = build_random_model(tiny_config()).state_dict()
    loaded = load_model(done.path, "cpu")
    assert loaded.image_size == RES
    state = loaded.model.state_dict()
    qkv = "vision_encoder.backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(state[qkv], base[qkv])  # adapter merged/applied
    for frozen in (
        "vision_encoder.backbone.blocks.0.mlp.proj_in.weight",
        "memory_encoder.projection.weight",
    ):
        torch.testing.assert_close(state[frozen], base[frozen], rtol=0, atol=0)
    # scratch.lora_modules_to_save: the IoU head and the no-memory token train beside the adapters
    for trained in ("mask_decoder.iou_prediction_head.proj_out.weight", "no_memory_embedding"):
        assert not torch.equal(state[trained], base[trained]), trained
    records = metrics(log)
    assert [r["type"] for r in records][:3] == ["start", "validation", "step"]
    assert (log / "config.yaml").is_file()


def test_best_epoch_is_decided_in_memory_not_from_the_file_another_process_writes(
    tmp_path, monkeypatch
):
    """Under ``accelerate launch`` only the main process writes ``best/``; a process that read
    it at each epoch could see it before or after that write, skip the barrier the others wait in,
    and crash the run (seen in CI). Here epoch 2 validates worse than epoch 1 and ``best.json``
    is gone when epoch 2 is judged, as another process may find it: epoch 2 must still not be
    the best."""
    from napari_cellsam2.training.loop import Trainer

    scores = iter([0.5, 0.4])

    def scripted(self, epoch):
        return ValidationEvent(epoch=epoch, val_loss=1.0, val_TRA=next(scores))

    monkeypatch.setattr(Trainer, "_validate", scripted)
    log = tmp_path / "best"
    cfg = config(log, "scratch.validate_first=false")
    checkpoints = []
    for event in train(cfg, dataset=clips(), val_dataset=clips(augment=False)):
        if isinstance(event, CheckpointEvent):
            checkpoints.append(event)
            (log / "checkpoints" / "best" / "best.json").unlink(missing_ok=True)
    assert [c.best is not None for c in checkpoints] == [True, False]


def test_a_resumed_run_ranks_against_the_record_inside_the_best_folder(tmp_path, monkeypatch):
    """``best/`` carries its own ``best.json``, swapped in with it, so no stop can pair the
    folder with another epoch's scores (a separate ``best.json`` written after the swap could
    be left naming epoch 1 beside epoch 2's folder; a resumed run then let a worse epoch 3
    replace the real best). Here the run stops after epoch 2, the best, and a resumed epoch 3
    validates worse: ``best/`` must stay epoch 2."""
    from napari_cellsam2.training.loop import Trainer, best_record

    scores = iter([0.5, 0.9, KeyboardInterrupt, 0.7])

    def scripted(self, epoch):
        score = next(scores)
        if score is KeyboardInterrupt:
            raise KeyboardInterrupt("stopped after epoch 2")
        return ValidationEvent(epoch=epoch, val_loss=1.0, val_TRA=score)

    monkeypatch.setattr(Trainer, "_validate", scripted)
    log = tmp_path / "stop"
    cfg = config(log, "scratch.validate_first=false", "scratch.num_epochs=3")
    with pytest.raises(KeyboardInterrupt):
        for _ in train(cfg, dataset=clips(), val_dataset=clips(augment=False)):
            pass
    checkpoints = log / "checkpoints"
    assert best_record(checkpoints)["epoch"] == 2
    assert not (checkpoints / "best.json").exists()  # one record, inside the folder
    resumed = config(log, "scratch.validate_first=false", "scratch.num_epochs=3")
    resumed.launcher.resume = True
    events = list(train(resumed, dataset=clips(), val_dataset=clips(augment=False)))
    assert [c.best is not None for c in of(events, CheckpointEvent)] == [False]
    assert best_record(checkpoints)["epoch"] == 2


def test_a_validation_part_is_averaged_over_the_clips_that_report_it(tmp_path):
    """``kept_iou`` exists only for clips where a prediction held a cell; averaging it over
    every clip understated it (0.5 here), and it ranks the epochs after val_TRA."""
    reported = []

    def objective(model, batch, scratch, generator):
        loss, parts = feature_loss(model, batch, scratch, generator)
        if not model.training:
            reported.append(len(reported) % 2 == 0)
            if reported[-1]:  # every other validation clip held a cell, kept at IoU 1
                parts["kept_iou"] = 1.0
        return loss, parts

    cfg = config(tmp_path / "parts", "scratch.num_epochs=1", "scratch.validate_first=false")
    events = run(cfg, dataset=clips(), val_dataset=clips(augment=False), objective=objective)
    assert True in reported and False in reported
    assert of(events, ValidationEvent)[0].val_kept_iou == pytest.approx(1.0)


def test_a_nan_validation_loss_never_ranks_as_the_best():
    best = ValidationEvent(epoch=1, val_loss=2.0, val_TRA=0.5, val_kept_iou=0.4)
    broken = ValidationEvent(epoch=2, val_loss=math.nan, val_TRA=0.5, val_kept_iou=0.4)
    assert broken.rank() < best.rank()


def test_full_mode_single_frame_batch_two_freeze_encoder(tmp_path):
    """num_frames=1 (segmentation) with batch_size=2 in full mode; the frozen encoder keeps its
    weights, the decoder changes, and the checkpoint round-trips exactly."""
    log = tmp_path / "run"
    cfg = config(
        log,
        "scratch.use_lora=false",
        "scratch.freeze_encoder=true",
        "scratch.num_frames=1",
        "scratch.batch_size=2",
        "scratch.num_epochs=1",
        "scratch.steps_per_epoch=1",
        "scratch.base_lr=1e-3",
    )
    events = run(cfg, dataset=clips(num_frames=1))
    assert of(events, ValidationEvent) == []  # a given dataset without val_dataset: no validation
    assert events[0].mode == "full"
    done = events[-1]
    assert isinstance(done, DoneEvent) and not done.cancelled
    base = build_random_model(tiny_config()).state_dict()
    state = load_model(done.path, "cpu").model.state_dict()
    enc = [k for k in base if k.startswith("vision_encoder.")]
    assert enc and all(torch.equal(state[k], base[k]) for k in enc)
    dec = "mask_decoder.transformer.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(state[dec], base[dec])


def test_cancel_saves_loadable_checkpoint_and_resume_continues_mid_epoch(tmp_path):
    log = tmp_path / "run"
    stop = threading.Event()
    events = []
    for event in train(config(log), dataset=clips(), objective=feature_loss, cancel=stop):
        events.append(event)
        if isinstance(event, StepEvent):
            stop.set()  # cancel after the first step
    assert [type(e) for e in events] == [StartEvent, StepEvent, DoneEvent]
    done = events[-1]
    assert done.cancelled and done.path == log / "checkpoints" / "step_000001"
    assert last_checkpoint(log) == done.path
    assert load_model(done.path, "cpu").image_size == RES

    resumed = run(config(log, "launcher.resume=true"), dataset=clips(), objective=feature_loss)
    steps = of(resumed, StepEvent)
    assert (resumed[0].start_epoch, resumed[0].start_step) == (1, 1)
    assert [(s.epoch, s.step, s.global_step) for s in steps] == [(1, 2, 2), (2, 1, 3), (2, 2, 4)]
    assert not (log / "checkpoints" / "step_000001").exists()  # superseded by epoch_001
    assert resumed[-1] == DoneEvent(log / "checkpoints" / "epoch_002", cancelled=False)
    # epoch 1's mean train loss covers the step before the cancel too
    first = [events[1].loss, steps[0].loss]
    assert of(resumed, EpochEvent)[0].train_loss == pytest.approx(sum(first) / 2)


def test_a_mid_epoch_resume_draws_the_random_numbers_an_uninterrupted_run_would(tmp_path):
    """Dropout draws from the global RNG; a resumed epoch must continue its stream, or the rest
    of the epoch trains on other masks than the run that was never stopped."""

    def noisy_loss(model, batch, scratch, generator):
        loss, parts = feature_loss(model, batch, scratch, generator)
        return loss * (1 + torch.rand(())), parts  # a draw from the global RNG, as dropout

    straight = run(config(tmp_path / "a"), dataset=clips(), objective=noisy_loss)
    stop, first = threading.Event(), []
    for event in train(config(tmp_path / "b"), dataset=clips(), objective=noisy_loss, cancel=stop):
        first.append(event)
        if isinstance(event, StepEvent):
            stop.set()  # cancel after the first step
    resumed = run(
        config(tmp_path / "b", "launcher.resume=true"), dataset=clips(), objective=noisy_loss
    )
    interrupted = [e.loss for e in of(first, StepEvent)] + [e.loss for e in of(resumed, StepEvent)]
    assert interrupted == [e.loss for e in of(straight, StepEvent)]


def test_a_mid_epoch_resume_with_another_batch_size_is_refused(tmp_path):
    """The clips a stopped epoch already used are counted in batches: with another batch size
    a resume would skip the wrong ones."""
    stop, log = threading.Event(), tmp_path / "run"
    for event in train(config(log), dataset=clips(), objective=feature_loss, cancel=stop):
        if isinstance(event, StepEvent):
            stop.set()
    again = config(log, "launcher.resume=true", "scratch.batch_size=2")
    with pytest.raises(TrainingError, match=r"batch_size \(1 -> 2\)"):
        run(again, dataset=clips(), objective=feature_loss)


def test_cancel_callable_before_first_step(tmp_path):
    events = run(config(tmp_path), dataset=clips(), objective=feature_loss, cancel=lambda: True)
    assert [type(e) for e in events] == [StartEvent, DoneEvent]
    assert events[-1].cancelled and load_model(events[-1].path, "cpu").image_size == RES


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    calls = []

    def nan_at_third(model, batch, scratch, generator):
        loss, parts = feature_loss(model, batch, scratch, generator)
        calls.append(1)
        return (loss * math.nan if len(calls) == 3 else loss), parts

    events = run(config(tmp_path), dataset=clips(), objective=nan_at_third)
    error = events[-1]
    good = tmp_path / "checkpoints" / "epoch_001"
    assert isinstance(error, ErrorEvent) and error.kind == "nan"
    assert error.checkpoint == good and str(good) in error.message
    assert len(of(events, StepEvent)) == 2 and of(events, DoneEvent) == []
    assert last_checkpoint(tmp_path) == good
    assert not (tmp_path / "checkpoints" / "epoch_002").exists()
    assert metrics(tmp_path)[-1]["type"] == "error"
    # the kept checkpoint: weights (safetensors), optimizer/scheduler state (weights_only), meta
    state = torch.load(good / "train_state.pt", weights_only=True)
    assert set(state) == {"optimizer", "scheduler"} and state["scheduler"]["last_epoch"] == 2
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {2}
    meta = json.loads((good / "train_state.json").read_text())
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (1, 0, 2)
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["checkpoint"] == (
        "epoch_001"
    )
    files = sorted(p.name for p in good.glob("*.safetensors"))  # adapter + trained bare parameters
    assert files == ["adapter_model.safetensors", "trained_parameters.safetensors"]
    for name in files:
        assert all(torch.isfinite(t).all() for t in load_file(good / name).values())
    losses = [s.loss for s in of(events, StepEvent)]
    assert of(events, EpochEvent)[0].train_loss == pytest.approx(sum(losses) / 2)


def test_out_of_memory_suggests_smaller_clips(tmp_path):
    def oom(model, batch, scratch, generator):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    events = run(config(tmp_path, "scratch.max_num_objects=7"), dataset=clips(), objective=oom)
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.kind == "oom" and error.checkpoint is None
    assert "scratch.max_num_objects (now 7)" in error.message
    assert error.message.index("max_num_objects") < error.message.index("scratch.num_frames")


def test_stop_at_epoch_end_and_resume_equals_uninterrupted_run(tmp_path):
    """Per-epoch seeding + restored optimizer moments and schedule: 1 + 1 epochs == 2 epochs."""
    a, b = tmp_path / "a", tmp_path / "b"
    straight = run(config(a), dataset=clips(), objective=feature_loss)
    stop = threading.Event()
    first = []
    for event in train(config(b), dataset=clips(), objective=feature_loss, cancel=stop):
        first.append(event)
        stop.set() if isinstance(event, CheckpointEvent) else None
    assert first[-1] == DoneEvent(b / "checkpoints" / "epoch_001", cancelled=True)
    resumed = run(config(b, "launcher.resume=true"), dataset=clips(), objective=feature_loss)
    assert [s.global_step for s in of(resumed, StepEvent)] == [3, 4]
    assert [s.lr for s in of(resumed, StepEvent)] == [s.lr for s in of(straight, StepEvent)][2:]
    # the adapter and the bare parameters trained beside it both resume exactly
    for name in ("adapter_model.safetensors", "trained_parameters.safetensors"):
        ta = load_file(a / "checkpoints" / "epoch_002" / name)
        tb = load_file(b / "checkpoints" / "epoch_002" / name)
        assert ta.keys() == tb.keys()
        for key in ta:
            torch.testing.assert_close(tb[key], ta[key], rtol=1e-5, atol=1e-7)
    state = torch.load(b / "checkpoints" / "epoch_002" / "train_state.pt", weights_only=True)
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {4}


# ---- errors before training -----------------------------------------------------------------
def test_resume_without_checkpoint_is_a_clear_error_and_writes_nothing(tmp_path):
    log = tmp_path / "empty"
    with pytest.raises(TrainingError, match="nothing to resume"):
        next(train(config(log, "launcher.resume=true"), dataset=clips()))
    assert not log.exists()


def test_a_config_file_in_the_log_folder_is_kept_as_a_backup(tmp_path):
    """``cellsam2 train --config run/config.yaml launcher.experiment_log_dir=run``: the run
    writes its resolved config there; the user's own (commented) file must survive."""
    log = tmp_path / "run"
    log.mkdir()
    mine = "# my notes on this experiment\nscratch:\n  num_epochs: 1\n"
    (log / "config.yaml").write_text(mine)
    run(config(log, "scratch.num_epochs=1"), dataset=clips(), objective=feature_loss)
    (kept,) = log.glob("config.yaml.backup-*")
    assert kept.read_text() == mine
    assert "experiment_log_dir" in (log / "config.yaml").read_text()
    kept.unlink()
    edited = (log / "config.yaml").read_text() + "# resumed for one more epoch\n"
    (log / "config.yaml").write_text(edited)  # edited by hand, then resumed from
    more = config(log, "scratch.num_epochs=2", "launcher.resume=true")
    run(more, dataset=clips(), objective=feature_loss)
    (kept,) = log.glob("config.yaml.backup-*")
    assert kept.read_text() == edited


@pytest.mark.parametrize(
    ("damaged", "content"),
    [("last.json", "{"), ("last.json", "{}"), ("epoch_001/train_state.json", "{}"),
     ("epoch_001/train_state.pt", "truncated"), ("best/best.json", "[]")],
)  # fmt: skip
def test_a_damaged_run_to_resume_is_a_clear_error_naming_the_file(tmp_path, damaged, content):
    log = tmp_path / "run"
    cfg = config(log, "scratch.num_epochs=1")
    run(cfg, dataset=clips(), val_dataset=clips(augment=False), objective=feature_loss)
    path = log / "checkpoints" / damaged
    path.write_text(content)
    more = config(log, "scratch.num_epochs=2", "launcher.resume=true")
    with pytest.raises(TrainingError, match=str(path)):
        run(more, dataset=clips(), val_dataset=clips(augment=False), objective=feature_loss)


def test_missing_data_fails_before_the_log_dir_is_created(tmp_path):
    log = tmp_path / "run"
    cfg = config(log, f"dataset.data_dir={tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="nowhere"):
        next(train(cfg))
    assert not log.exists()
    for bad, message in [
        ("scratch.prob_point=-1", "prob_point/prob_box/prob_mask"),
        ("scratch.prob_correction_from_gt=2", "prob_correction_from_gt"),
        ("scratch.val_divisions=sometimes", r"val_divisions must be one of"),
        (
            ["scratch.mother_covers_daughters=true", "scratch.pred_div_scores=true"],
            "mother_covers_daughters is for models without the division head",
        ),
    ]:  # prompt and target settings are checked up front too, not at the first step
        bad = [bad] if isinstance(bad, str) else bad
        with pytest.raises(ValueError, match=message):
            next(train(config(log, *bad), dataset=clips()))
        assert not log.exists()


def test_existing_run_needs_resume_and_wandb_needs_its_package(tmp_path, monkeypatch):
    run(config(tmp_path, "scratch.num_epochs=1"), dataset=clips(), objective=feature_loss)
    with pytest.raises(TrainingError, match=r"launcher\.resume=true"):
        next(train(config(tmp_path), dataset=clips()))
    with pytest.raises(TrainingError, match="already completed 1 epoch"):
        next(
            train(config(tmp_path, "launcher.resume=true", "scratch.num_epochs=1"), dataset=clips())
        )
    resume = config(tmp_path, "launcher.resume=true", "scratch.lora_rank=4")
    with pytest.raises(TrainingError, match=r"scratch\.lora_rank: 32 -> 4"):
        next(train(resume, dataset=clips()))
    with pytest.raises(TrainingError, match=r"trained in lora mode"):
        next(
            train(
                config(tmp_path, "launcher.resume=true", "scratch.use_lora=false"), dataset=clips()
            )
        )
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(TrainingError, match="pip install wandb"):
        next(train(config(tmp_path / "w", "scratch.use_wandb=true"), dataset=clips()))


# ---- parameters and schedule ----------------------------------------------------------------
def test_lora_on_real_hiera_tiny_architecture():
    model = build_random_model(hiera_tiny_config(256))
    peft_model = apply_lora(model, ScratchConfig())
    count = count_parameters(peft_model)
    # rank-32 adapters (4 x the 433,408 of rank 8) + trained copies of the IoU and object-score
    # heads (264,453) + no-memory embedding / position, no-object pointer (3 x 256) and the
    # occlusion embedding (64); the copies also add to the total (39,395,906 at rank 8)
    lora = 4 * 433_408
    assert count.trainable == lora + 264_453 + 3 * 256 + 64
    assert count.total == 39_395_906 - 433_408 + lora + 264_453
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert all(
        "lora_" in n or ".modules_to_save." in n or n.split(".")[-1].startswith(("no_", "occ"))
        for n in names
    )
    for part in (
        "vision_encoder.backbone.blocks.11.attn.qkv",
        "mask_decoder.transformer",
        "memory_attention.layers.0.cross_attn_image",
        "memory_attention.layers.0.self_attn",
    ):
        assert any(part in n for n in names), part
    groups = build_param_groups(peft_model, ScratchConfig(lora_lr=2e-3))
    assert {g["lr"] for g in groups} == {2e-3}
    with pytest.raises(ValueError, match=r"scratch\.lora_targets=\['nowhere'\]"):
        apply_lora(build_random_model(tiny_config()), ScratchConfig(lora_targets=["nowhere"]))


def test_full_mode_groups_layer_decay_and_no_decay_set():
    model = build_random_model(tiny_config())
    scratch = ScratchConfig(use_lora=False, vision_lr=1e-4, base_lr=1e-3, layer_decay=0.5)
    groups = build_param_groups(model, scratch)
    names = {n: p for n, p in model.named_parameters()}
    group_of = {id(p): g for g in groups for p in g["params"]}
    lr = {n: group_of[id(p)]["lr"] for n, p in names.items()}
    wd = {n: group_of[id(p)]["weight_decay"] for n, p in names.items()}
    blocks = [lr[f"vision_encoder.backbone.blocks.{i}.attn.qkv.weight"] for i in range(5)]
    assert blocks == pytest.approx([1e-4 * 0.5**k for k in (4, 3, 2, 1, 0)])  # deeper -> higher
    assert lr["vision_encoder.backbone.pos_embed"] == pytest.approx(1e-4 * 0.5**5)
    assert lr["vision_encoder.neck.convs.0.weight"] == 1e-4
    assert lr["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"] == 1e-3
    for no_decay in (
        "vision_encoder.backbone.pos_embed",
        "vision_encoder.backbone.blocks.0.layer_norm1.weight",
        "mask_decoder.transformer.layers.0.self_attn.q_proj.bias",
        "mask_decoder.iou_token.weight",
        "memory_temporal_positional_encoding",
        "no_memory_embedding",
        "prompt_encoder.point_embed.weight",
    ):
        assert wd[no_decay] == 0.0, no_decay
    assert wd["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"] == scratch.weight_decay
    assert wd["vision_encoder.backbone.patch_embed.projection.weight"] == scratch.weight_decay

    assert freeze_encoder(model) > 0
    frozen = build_param_groups(model, scratch)
    assert not any(g["name"].startswith("encoder") for g in frozen)


def test_head_lr_gives_cellsam2_heads_their_own_rate_in_both_modes():
    model = build_random_model(tiny_config())
    attach_division_head(model)
    attach_centre_head(model)
    heads = {"mask_decoder.division_head.token.weight", "centre_head.net.0.weight"}

    def rates(net, scratch):
        group_of = {id(p): g["lr"] for g in build_param_groups(net, scratch) for p in g["params"]}
        return {n: group_of[id(p)] for n, p in net.named_parameters() if p.requires_grad}

    full = ScratchConfig(use_lora=False, base_lr=1e-4, vision_lr=1e-4, head_lr=2e-3)
    lr = rates(model, full)
    assert all(lr[n] == 2e-3 for n in heads)
    assert lr["mask_decoder.iou_token.weight"] == 1e-4  # SAM 2's own decoder keeps base_lr
    assert sum(v == 2e-3 for v in lr.values()) == 13  # the division head's 7 + the heatmap's 6
    unset = rates(model, ScratchConfig(use_lora=False, base_lr=1e-4, vision_lr=1e-4))
    assert all(unset[n] == 1e-4 for n in heads)  # empty: the heads follow their mode

    peft_model = apply_lora(model, ScratchConfig(lora_lr=1e-3, head_lr=5e-3))
    for head in heads_of(peft_model):
        head.requires_grad_(True)
    lora = rates(peft_model, ScratchConfig(lora_lr=1e-3, head_lr=5e-3))
    assert sum(v == 5e-3 for v in lora.values()) == 13
    assert any(v == 1e-3 and "lora_" in n for n, v in lora.items())


def test_lr_schedule_warmup_then_cosine_to_min():
    assert lr_factor(0, 100, 0.1, warmup=5) == pytest.approx(0.2)
    assert lr_factor(4, 100, 0.1, warmup=5) == pytest.approx(1.0)
    assert lr_factor(5, 100, 0.1, warmup=5) == pytest.approx(1.0)
    assert lr_factor(99, 100, 0.1, warmup=5) == pytest.approx(0.1)
    values = [lr_factor(k, 100, 0.1, warmup=5) for k in range(5, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_training_runs_without_cudnn_attention_and_restores_the_flag(tmp_path):
    """cuDNN plans every new attention shape (2.4x slower steps on an H200): training avoids it."""
    seen = []

    def recording_loss(model, batch, scratch, generator):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return feature_loss(model, batch, scratch, generator)

    before = torch.backends.cuda.cudnn_sdp_enabled()
    run(
        config(tmp_path, "scratch.num_epochs=1", "scratch.steps_per_epoch=1"),
        dataset=clips(),
        objective=recording_loss,
    )
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
