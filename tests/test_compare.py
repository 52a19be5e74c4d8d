"""`cellsam2 compare`: zero-shot vs LoRA vs full fine-tuning end to end on tiny synthetic data.

One comparison (tiny random model, 2 optimizer steps per mode, one 6-frame test movie) is run
through the CLI and shared by the tests: the run folder, the numbers it reports, reruns that
reuse or refuse it, and the step-budget plan.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from napari_cellsam2.cli import main
from napari_cellsam2.ctc import Lineage, open_path, read_res, write_gt, write_images, write_res
from napari_cellsam2.datasets import write_dataset
from napari_cellsam2.evaluation import evaluate_folders
from napari_cellsam2.evaluation.compare import compare, plan_steps, score_result
from napari_cellsam2.model import loading
from napari_cellsam2.model.loading import load_model
from napari_cellsam2.tracking import TrackingResult

FAST = [  # keep the real objective cheap: 2-frame clips, few objects, no correction clicks
    "scratch.num_frames=2",
    "scratch.max_num_objects=2",
    "scratch.max_num_bkgd_objects=1",
    "scratch.num_correction_pt_per_frame=0",
    "scratch.val_steps=1",
    "scratch.lora_dropout=0.0",  # LoRA dropout draws random numbers: modes would start apart
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """train/val/test: one 6-frame 64 x 16 mother-machine movie each."""
    root = tmp_path_factory.mktemp("data") / "mm"
    return write_dataset(root, "mother-machine", sequences=3, frames=6, height=64, width=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cmp") / "run"
    args = ["compare", "--base", "tiny", "--data", str(data_dir), "--out", str(out)]
    args += ["--steps", "2", "--clicks", "--click-budget", "2", "--device", "cpu", *FAST]
    buffer = io.StringIO()  # capsys is per test; this fixture is shared by the module
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    return out, buffer.getvalue()


def _args(data_dir: Path, out: Path, **changes) -> dict:
    kwargs = dict(
        steps=2,
        seed=0,
        seeding=("gt", "clicks"),
        overrides=FAST,
        annotate_tracks=True,
        iou_threshold=0.8,
        max_clicks=2,
        device="cpu",
    )
    kwargs.update(changes)
    return kwargs


def test_compare_writes_table_json_plot_and_results(run, data_dir):
    out, printed = run
    summary = json.loads((out / "compare.json").read_text())
    modes = summary["modes"]
    assert list(modes) == ["zero-shot", "lora", "full"]
    for mode, r in modes.items():
        for how in ("gt", "clicks"):
            mean = r["metrics"][how]["mean"]
            assert all(0.0 <= mean[m] <= 1.0 for m in ("TRA", "SEG", "DET", "LNK"))
            assert list(r["metrics"][how]["sequences"]) == ["01"]
            res = read_res(out / mode / "res" / how / "01_RES")  # a valid CTC result
            assert len(res.masks) == 6
        a = r["annotation"]
        assert a["tracks"] == len(a["per_track"]) > 0 and a["movie_frames"] == 6
        assert a["clicks"] == sum(t["clicks"] for t in a["per_track"]) <= 2 * a["tracks"]
        assert a["clicks_per_100_frames"] == pytest.approx(100 * a["clicks"] / 6)
        assert r["eval_peak_mb"] > 0 and r["memory_kind"] == "rss"
        assert mode in printed
    zero, lora, full = modes["zero-shot"], modes["lora"], modes["full"]
    assert zero["trainable_params"] == 0 and zero["steps"] == 0 and zero["checkpoint"] is None
    assert 0 < lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    for r in (lora, full):
        assert r["steps"] == 2 and r["loss"]["steps"] == [1, 2]
        assert all(np.isfinite(r["loss"]["loss"])) and r["loss"]["val_steps"] == [2]
        assert r["train_peak_mb"] > 0 and r["train_seconds"] > 0
        records = (Path(r["checkpoint"]).parents[1] / "metrics.jsonl").read_text().splitlines()
        assert sum(json.loads(x)["type"] == "step" for x in records) == 2
    assert load_model(lora["checkpoint"], "cpu").kind == "lora"
    # same seed, same data, same first batch: both modes start from the same loss
    assert lora["loss"]["loss"][0] == pytest.approx(full["loss"]["loss"][0])
    header = next(line for line in printed.splitlines() if line.startswith("mode"))
    assert header.split()[:5] == ["mode", "TRA", "SEG", "DET", "LNK"]
    image = imread(out / "compare.png")
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_rerun_reuses_finished_modes_and_refuses_other_settings(run, data_dir, monkeypatch):
    out, _ = run
    before = {m: (out / m / "result.json").read_text() for m in ("zero-shot", "lora", "full")}
    lines = (out / "lora" / "metrics.jsonl").read_text()
    loaded = []
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loaded.append(a))
    again = compare("tiny", data_dir, out, **_args(data_dir, out))
    assert loaded == []  # every mode is done: no model is loaded
    assert (out / "lora" / "metrics.jsonl").read_text() == lines  # nothing retrained
    assert {m: json.loads(before[m]) for m in before} == again["modes"]
    with pytest.raises(ValueError, match=r"other settings \(steps: 2 -> 3\)"):
        compare("tiny", data_dir, out, **_args(data_dir, out, steps=3))


def test_a_mode_without_result_reuses_its_finished_training(run, data_dir, tmp_path):
    out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for mode in ("zero-shot", "lora"):
        shutil.rmtree(copy / mode)
    (copy / "full" / "result.json").unlink()
    shutil.rmtree(copy / "full" / "res")
    lines = (copy / "full" / "metrics.jsonl").read_text()
    summary = compare("tiny", data_dir, copy, modes=["full"], **_args(data_dir, copy))
    assert (copy / "full" / "metrics.jsonl").read_text() == lines
    assert list(summary["modes"]) == ["full"]
    old = json.loads((out / "full" / "result.json").read_text())
    assert summary["modes"]["full"]["metrics"] == old["metrics"]
    assert summary["modes"]["full"]["checkpoint"].startswith(str(copy))
    # the cost is the training's, not the reuse's (it read 0.0 s and the process's memory)
    for key in ("train_seconds", "train_peak_mb"):
        assert summary["modes"]["full"][key] == old[key]


def test_damaged_run_records_are_named_not_a_traceback(run, data_dir, tmp_path, capsys):
    """A run folder cut off while writing (or edited by hand) gives one error naming the file
    through the CLI (exit 2), and a damaged training-log line only leaves the loss curve."""
    out, _ = run
    base = ["compare", "--base", "tiny", "--data", str(data_dir), "--steps", "2"]
    base += ["--clicks", "--click-budget", "2", "--device", "cpu", *FAST]
    for damaged in ("settings.json", "full/result.json", "full/train_cost.json"):
        copy = tmp_path / damaged.replace("/", "_")
        shutil.copytree(out, copy)
        if damaged != "settings.json":  # make the mode be recomputed from its training
            (copy / "full" / "result.json").unlink()
        (copy / damaged).write_text('{"seconds": 1.0')  # cut off mid-write
        assert main([*base, "--out", str(copy), "--modes", "full"]) == 2
        err = capsys.readouterr().err
        assert f"{copy / damaged} is not readable JSON" in err and "Traceback" not in err
    copy = tmp_path / "log"
    shutil.copytree(out, copy)
    (copy / "full" / "result.json").unlink()
    log = copy / "full" / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([*lines[:2], lines[2][:10], *lines[2:]]) + "\n")
    with pytest.warns(UserWarning, match=r"metrics.jsonl: skipped 1 damaged line\(s\) \(line 3"):
        summary = compare("tiny", data_dir, copy, modes=["full"], **_args(data_dir, copy))
    assert summary["modes"]["full"]["loss"]["steps"] == [1, 2]


def test_plan_steps_spends_exactly_the_budget():
    assert plan_steps(10, 4) == (5, 2)
    assert plan_steps(7, 3) == (7, 1)
    assert plan_steps(4, 10) == (1, 4)
    assert plan_steps(12, 12) == (1, 12)
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_steps(0, 3)


def test_bad_requests_are_named(data_dir, tmp_path, capsys):
    base = ["compare", "--base", "tiny", "--data", str(data_dir), "--out", str(tmp_path / "o")]
    assert main([*base, "scratch.num_epochs=3"]) == 2
    assert "compare sets scratch.num_epochs itself" in capsys.readouterr().err
    assert main([*base, "--modes", "zero-shot,half"]) == 2
    assert "modes must be a non-empty subset" in capsys.readouterr().err
    assert main([*base, "--modes", ","]) == 2  # no mode given is not every mode
    assert "modes must be a non-empty subset" in capsys.readouterr().err
    for leak in (["dataset.train_split=test"], ["dataset.val_split=test"], ["--split", "val"]):
        assert main([*base, "--modes", "lora", *leak]) == 2  # never score on what trained
        assert "neither trained on nor were chosen by" in capsys.readouterr().err
    assert main([*base[:4], str(tmp_path / "nowhere"), *base[5:]]) == 2
    assert "no such dataset folder" in capsys.readouterr().err
    assert main([*base, "--split", "holdout"]) == 2
    assert "split 'holdout' has no sequences" in capsys.readouterr().err
    # a typo in the model, an override or the device is refused before the run folder
    # records its settings (which made the corrected rerun refuse "other settings")
    typos = [["compare", "--base", "tinyy", *base[3:]], [*base, "scratch.nonsense=1"]]
    for args in [*typos, [*base, "--device", "gpu7"]]:
        assert main(args) == 2
        assert not (tmp_path / "o").exists(), args


@pytest.fixture
def two_cells(tmp_path) -> Path:
    """Two still cells side by side on 4 frames, with a 1-pixel background border."""
    gt = np.zeros((4, 16, 16), np.uint16)
    gt[:, 1:15, 1:8], gt[:, 1:15, 8:15] = 1, 2
    write_images(tmp_path / "01", (gt * 500).astype(np.uint16))
    write_gt(tmp_path / "01_GT", gt, Lineage.from_labels(gt), seg_frames=[0, 2])
    return tmp_path / "01"


def test_a_result_without_background_is_still_scored(two_cells, tmp_path):
    """py-ctcmetrics alone takes a frame's first label for background; the evaluation stages a
    scoring copy instead, and the written result keeps every pixel."""
    seq = open_path(two_cells)
    labels = np.zeros((4, 16, 16), np.uint16)
    labels[:, :, :8], labels[:, :, 8:] = 1, 2  # every pixel labelled
    lineage = Lineage.from_labels(labels)
    direct = evaluate_folders(seq.gt.folder, write_res(tmp_path / "raw", labels, lineage))
    scores = score_result(TrackingResult(labels, lineage, {}), seq, tmp_path / "RES")
    for result in (direct, scores):
        assert result["Valid"] == 1.0 and result["TRA"] > 0.95 and result["DET"] > 0.95
        assert 0.7 < result["SEG"] < 1.0  # the border pixels are false positives
    written = read_res(tmp_path / "RES").masks
    assert all(written.frame(t).all() for t in range(4))


def test_an_empty_result_scores_zero_where_the_gt_defines_a_score(two_cells, tmp_path):
    seq = open_path(two_cells)
    empty = TrackingResult(np.zeros((4, 16, 16), np.uint16), Lineage(), {})
    scores = score_result(empty, seq, tmp_path / "RES")
    assert scores["TRA"] == scores["DET"] == scores["SEG"] == scores["Valid"] == 0.0
    assert scores["LNK"] == 0.0  # the GT links each cell over time
    assert scores["BC(0)"] is None  # no GT divisions: undefined, not zero
