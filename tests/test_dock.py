"""The dock end to end in a real napari viewer (pytest-qt, Xvfb), on the tiny model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cellsam2.ctc import Lineage, write_gt
from napari_cellsam2.ctc.napari_layers import PARENTS_KEY
from napari_cellsam2.datasets import sample_sequence
from napari_cellsam2.tracking.division_config import DivisionConfig
from napari_cellsam2.widgets import CellSAM2Widget
from napari_cellsam2.widgets.lineage_view import TRACKS_NAME
from napari_cellsam2.widgets.track_panel import LABELS_NAME

pytestmark = pytest.mark.gui


def _wait_idle(qtbot, state, timeout=120_000) -> None:
    qtbot.waitUntil(lambda: not state.busy, timeout=timeout)


def _click(qtbot, panel, frame, x, y) -> None:
    panel.prompts.points.add([frame, y, x])
    qtbot.waitUntil(lambda: panel.pending_previews == 0, timeout=60_000)


def _gt_centre(viewer, frame, label):
    gt = np.asarray(viewer.layers["mother machine TRA"].data[frame])
    ys, xs = np.nonzero(gt == label)
    return float(xs.mean()), float(ys.mean())


def _session(widget, qtbot):
    """A session on the mother-machine sample, started and idle; the track panel."""
    track = widget.track_panel
    track.image.select("mother machine")
    track.start_session()
    _wait_idle(qtbot, widget.state)
    return track


def _start_with_two_cells(viewer, widget, qtbot) -> list[int]:
    track = _session(widget, qtbot)
    gt_frame0 = np.asarray(viewer.layers["mother machine TRA"].data[0])
    cells = [int(v) for v in np.unique(gt_frame0) if v][:2]
    for cell in cells:
        track.cell.setValue(cell)
        _click(qtbot, track, 0, *_gt_centre(viewer, 0, cell))
    return cells


def _demo_session(widget, qtbot):
    """The shipped demo model loaded and a session on the mother-machine sample; the panel."""
    with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
        widget.model_panel.load("demo")
    _wait_idle(qtbot, widget.state)
    return _session(widget, qtbot)


def _record_threads(monkeypatch, targets) -> list[bool]:
    """Patch each ``(owner, name)`` callable to note whether it ran on the GUI thread."""
    on_gui: list[bool] = []

    def noting(call):
        def noted(*args, **kwargs):
            on_gui.append(threading.current_thread() is threading.main_thread())
            return call(*args, **kwargs)

        return noted

    for owner, name in targets:
        monkeypatch.setattr(owner, name, noting(getattr(owner, name)))
    return on_gui


def _train(widget, tmp_path, *, epochs=1, steps=2):
    train = widget.train_panel
    train.image.select("mother machine")
    train.labels.select(LABELS_NAME)
    train.epochs.setValue(epochs)
    train.steps.setValue(steps)
    train.frames.setValue(2)
    train.max_objects.setValue(3)
    train.log_dir.setText(str(tmp_path / "runs"))
    train.start()
    return train


def test_user_story_track_correct_finetune_use_export_evaluate(dock, qtbot, tmp_path, monkeypatch):
    """Open the sample, load a model, click two cells, track, correct, fine-tune LoRA from the
    layers, use the fine-tuned model, export RES and evaluate; the model's work (image encoder,
    mask decoder, training losses) never runs on the GUI thread."""
    import napari_cellsam2.training.objective as objective

    viewer, widget = dock
    track = widget.track_panel
    cells = _start_with_two_cells(viewer, widget, qtbot)
    model = track.session.model
    model_work = _record_threads(
        monkeypatch, [(model, "get_image_features"), (model.mask_decoder, "forward")]
    )
    training_work = _record_threads(monkeypatch, [(objective, "clip_losses")])
    labels = viewer.layers[LABELS_NAME]
    assert set(np.unique(labels.data[0])) >= set(cells)  # instant preview on the clicked frame

    track.direction.setCurrentText("forward")
    track.track()
    _wait_idle(qtbot, widget.state)
    for t in range(labels.data.shape[0]):
        assert set(cells) <= set(np.unique(labels.data[t])), f"frame {t} lost a cell"
    tracks = viewer.layers[TRACKS_NAME]

    # a correction on a later frame re-tracks from there only
    before = np.array(labels.data[:10])
    track.cell.setValue(cells[0])
    _click(qtbot, track, 10, *_gt_centre(viewer, 10, cells[0]))
    track.track()
    _wait_idle(qtbot, widget.state)
    assert model_work and not any(model_work), "tracking ran the model on the GUI thread"
    np.testing.assert_array_equal(labels.data[:10], before)
    assert viewer.layers[TRACKS_NAME] is tracks  # updated in place, not removed and re-added

    train = _train(widget, tmp_path)  # (napari adds its progress bar to the activity dock)
    qtbot.waitUntil(lambda: "training finished" in train.eta.text(), timeout=300_000)
    _wait_idle(qtbot, widget.state)
    assert training_work and not any(training_work), "training ran on the GUI thread"
    assert len(train.plot.train_losses) == 2 and all(np.isfinite(train.plot.train_losses))
    # the movie's last frames are held out: one validation point per epoch, at its last step
    # the base model (step 0), then one validation point per epoch, at its last step
    assert train.plot.val_steps == [0, 2] and np.isfinite(train.plot.val_losses).all()
    # validation on the tracking path: the session's TRA and the kept output's IoU per epoch
    tra, kept = train.plot.series["TRA"][1], train.plot.series["kept_iou"][1]
    assert len(tra) == len(kept) == 2 and all(0 <= v <= 1 for v in (*tra, *kept))
    assert train.checkpoint is not None and train.use_button.isEnabled()
    assert train.best == train.checkpoint.parent / "best" and train.best_epoch == 1
    with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
        train.use_model()
    _wait_idle(qtbot, widget.state)
    assert widget.state.model.spec == str(train.best)  # "Use this model" takes the best epoch
    assert "best epoch (1" in train.eta.text()
    assert widget.state.model.kind == "lora"
    # the tracker now runs the fine-tuned model and keeps what was tracked and corrected
    assert track.session.model is widget.state.model.model
    np.testing.assert_array_equal(labels.data[:10], before)
    track.cell.setValue(cells[1])
    _click(qtbot, track, 30, *_gt_centre(viewer, 0, cells[1]))
    track.track()
    _wait_idle(qtbot, widget.state)
    assert cells[1] in np.unique(labels.data[30])
    np.testing.assert_array_equal(labels.data[:10], before)

    export = widget.export_panel
    export.layer.select("mother machine TRA")
    export.out.setText(str(tmp_path / "01"))
    export.export("gt")
    _wait_idle(qtbot, widget.state)
    export.layer.select(LABELS_NAME)
    export.out.setText(str(tmp_path / "01_RES"))
    export.export("res")
    _wait_idle(qtbot, widget.state)
    assert (tmp_path / "01_RES" / "res_track.txt").exists()
    export.gt.setText(str(tmp_path / "01_GT"))
    export.evaluate()
    _wait_idle(qtbot, widget.state, timeout=120_000)
    shown = {export.table.item(i, 0).text() for i in range(export.table.rowCount())}
    assert {"TRA", "SEG", "DET", "LNK"} <= shown
    assert 0.0 < export.scores["DET"] < 1.0  # two tracked cells of many
    export.layer.select("mother machine TRA")  # the ground truth scores perfectly against itself
    export.evaluate()
    _wait_idle(qtbot, widget.state, timeout=120_000)
    assert export.scores["TRA"] == export.scores["DET"] == export.scores["SEG"] == 1.0


def test_a_new_cell_takes_its_id_when_clicked_not_when_n_was_pressed(dock, qtbot, monkeypatch):
    """``n`` shows the next free ID; a job that takes IDs before the click (here a seed from
    the GT; a division while tracking is the same) must not make the click land on one of its
    cells. And ``n`` while a job runs is refused, as the disabled button is."""
    viewer, widget = dock
    track = _session(widget, qtbot)
    track.new_cell()
    shown = track.cell.value()
    viewer.dims.set_current_step(0, 0)
    track.seed_layer.select("mother machine TRA")
    track.seed()  # takes the GT's IDs, the shown one among them
    _wait_idle(qtbot, widget.state)
    seeded = list(track.session.object_ids)
    assert shown in seeded
    _click(qtbot, track, 0, *_gt_centre(viewer, 0, seeded[0]))
    new = [i for i in track.session.object_ids if i not in seeded]
    assert len(new) == 1 and new[0] == max(seeded) + 1  # a cell of its own, not `shown`
    assert track.cell.value() == new[0]
    _click(qtbot, track, 0, *_gt_centre(viewer, 0, seeded[0]))  # refines the same new cell
    assert [i for i in track.session.object_ids if i not in seeded] == new
    # n, click, n, click before the first click's job ran: two cells, not one with two clicks
    x, y = _gt_centre(viewer, 0, seeded[0])
    for _ in range(2):
        track.new_cell()
        track.prompts.points.add([0, y, x])
    qtbot.waitUntil(lambda: track.pending_previews == 0, timeout=60_000)
    assert len(track.session.object_ids) == len(seeded) + 3
    shown = track.cell.value()
    monkeypatch.setattr(type(widget.state), "busy", property(lambda _self: True))
    track.new_cell()
    assert track.cell.value() == shown and track._new_cell is None


def test_a_label_painted_on_the_tracking_layer_is_never_given_to_a_new_cell(dock, qtbot):
    """Painting with napari's brush makes a cell the session does not know yet; its label must be
    reserved at once (before, only "Use painted frame" or an export re-read the labels, so a
    division or detection in between took the painted ID and merged with the painted cell)."""
    viewer, widget = dock
    track = _session(widget, qtbot)
    free = track.session.new_object_id()
    viewer.layers[LABELS_NAME].paint((3, 20, 8), free)  # the brush, on frame 3
    qtbot.waitUntil(lambda: track.session.new_object_id() > free, timeout=10_000)
    _wait_idle(qtbot, widget.state)
    qtbot.waitUntil(lambda: track.cell.value() == free + 1, timeout=5_000)  # shown as next free


def test_cancel_tracking_leaves_a_consistent_resumable_session(dock, qtbot):
    viewer, widget = dock
    track = widget.track_panel
    cells = _start_with_two_cells(viewer, widget, qtbot)
    track.direction.setCurrentText("forward")
    track.track()
    qtbot.waitUntil(lambda: track.bar.value() >= 2, timeout=60_000)
    track.cancel()
    _wait_idle(qtbot, widget.state)
    labels = viewer.layers[LABELS_NAME].data
    done = [t for t in range(len(labels)) if set(cells) <= set(np.unique(labels[t]))]
    assert done == list(range(len(done))) and 2 <= len(done) < len(labels)
    track.track()  # resumes where it stopped
    _wait_idle(qtbot, widget.state)
    assert all(set(cells) <= set(np.unique(labels[t])) for t in range(len(labels)))


def test_cancel_training_keeps_a_loadable_checkpoint(dock, qtbot, tmp_path):
    from napari_cellsam2.model.loading import load_model

    viewer, widget = dock
    _start_with_two_cells(viewer, widget, qtbot)
    widget.track_panel.track()
    _wait_idle(qtbot, widget.state)
    train = _train(widget, tmp_path, epochs=50, steps=50)
    qtbot.waitUntil(lambda: len(train.plot.train_losses) >= 1, timeout=120_000)
    train.cancel()
    _wait_idle(qtbot, widget.state, timeout=120_000)
    assert len(train.plot.train_losses) < 50 * 50
    assert "cancelled" in train.eta.text()
    loaded = load_model(train.checkpoint, "cpu")
    assert loaded.kind == "lora"


def test_undo_restores_a_division(dock, qtbot):
    viewer, widget = dock
    track = widget.track_panel
    cells = _start_with_two_cells(viewer, widget, qtbot)
    track.track()
    _wait_idle(qtbot, widget.state)
    labels = viewer.layers[LABELS_NAME]
    before = np.array(labels.data)
    track.cell.setValue(cells[0])
    track.begin_divide()
    x, y = _gt_centre(viewer, 0, cells[0])  # any point on the image does for daughters
    for dy in (-3, 3):
        track.prompts.points.add([20, y + dy, x])
    _wait_idle(qtbot, widget.state)  # the division runs in a worker, then its preview
    qtbot.waitUntil(lambda: track.pending_previews == 0, timeout=60_000)
    assert track.session.frame_range(cells[0])[1] == 19  # the mother now ends before frame 20
    # the division reaches the links that export and the napari writer take from the layer
    daughters = [i for i in track.session.object_ids if track.session.parent(i) == cells[0]]
    links = labels.metadata[PARENTS_KEY]
    assert len(daughters) == 2 and all(links.get(d) == cells[0] for d in daughters)
    track.undo()
    _wait_idle(qtbot, widget.state)
    assert track.session.frame_range(cells[0])[1] == labels.data.shape[0] - 1
    np.testing.assert_array_equal(labels.data, before)


def test_divide_mode_ends_with_its_session_and_a_refused_division_leaves_no_clicks(dock, qtbot):
    viewer, widget = dock
    track = _session(widget, qtbot)
    track.begin_divide()
    track.start_session()  # a new session (nothing tracked: no question asked) ends divide mode
    _wait_idle(qtbot, widget.state)
    for cell in (1, 2):
        track.cell.setValue(cell)
        _click(qtbot, track, 0, *_gt_centre(viewer, 0, cell))  # ordinary clicks again
    _wait_idle(qtbot, widget.state)
    assert track.session.object_ids == [1, 2]
    clicks = len(track.prompts.points.data)
    track.begin_divide()
    x, y = _gt_centre(viewer, 0, 1)  # any point of the image does
    track.prompts.points.add([5, y, x])
    track.prompts.points.add([6, y, x])  # daughters on two frames: refused
    assert "same frame" in track.status.text()
    qtbot.waitUntil(lambda: len(track.prompts.points.data) == clicks, timeout=5_000)


def test_demo_without_cached_weights_offers_the_labelled_demo_model(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    from napari_cellsam2.widgets import demo

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    warnings = []
    monkeypatch.setattr(demo, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    widget = demo.open_demo(viewer, load=False)
    assert [ly.name for ly in viewer.layers][:2] == ["mother machine", "mother machine TRA"]
    assert "hf download facebook/sam2.1-hiera-tiny" in warnings[0]
    assert widget.model_panel.current_spec() == "demo"  # the shipped model, not random weights
    assert "trained on synthetic data only" in widget.model_panel.spec.currentText()


def test_demo_prefers_cached_hub_weights(make_napari_viewer, tmp_path, monkeypatch):
    from napari_cellsam2.widgets import demo

    monkeypatch.setattr(demo, "hub_weights_cached", lambda repo: True)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8)), name="my image")  # the demo opened beside the user's
    widget = demo.open_demo(viewer, load=False)
    assert widget.model_panel.current_spec() == demo.DEFAULT_MODEL
    assert widget.track_panel.image.layer().name == "mother machine"  # the sample, not mine


def test_moving_to_a_frame_prefetches_its_features(dock, qtbot):
    viewer, widget = dock
    track = _session(widget, qtbot)
    assert 7 not in track.session._features
    viewer.dims.set_current_step(0, 7)
    qtbot.waitUntil(lambda: 7 in track.session._features, timeout=30_000)


def test_export_shows_progress_and_cancel_writes_nothing(dock, qtbot, tmp_path, monkeypatch):
    import tifffile

    from napari_cellsam2.ctc import writer

    viewer, widget = dock
    export = widget.export_panel
    gt_dir = tmp_path / "gt" / "01_GT"  # the sample's ground truth, for the evaluation below
    seq = sample_sequence()
    write_gt(gt_dir, seq.labels, Lineage.from_labels(seq.labels, seq.parents))
    out = tmp_path / "out"
    written, imwrite = [], tifffile.imwrite

    def slow_write(path, data, **kwargs):  # long enough to cancel half-way
        written.append(path)
        time.sleep(0.05)
        imwrite(path, data, **kwargs)

    monkeypatch.setattr(writer.tifffile, "imwrite", slow_write)
    export.layer.select("mother machine TRA")
    export.out.setText(str(out / "01_RES"))
    export.export("res")
    assert export.cancel_button.isEnabled() and not export.evaluate_button.isEnabled()
    qtbot.waitUntil(lambda: len(written) >= 2, timeout=30_000)
    export.cancel()
    _wait_idle(qtbot, widget.state)
    frames = len(viewer.layers["mother machine TRA"].data)
    assert 2 <= len(written) < frames
    assert not out.exists() or list(out.iterdir()) == []  # no folder, no temporary one
    assert not export.cancel_button.isEnabled() and export.evaluate_button.isEnabled()

    written.clear()  # evaluation writes a temporary result first: cancellable too
    export.gt.setText(str(gt_dir))
    export.evaluate()
    qtbot.waitUntil(lambda: len(written) >= 2, timeout=30_000)
    export.cancel()
    _wait_idle(qtbot, widget.state)
    assert 2 <= len(written) < frames and not Path(written[0]).parent.exists()
    assert export.table.rowCount() == 0


def test_precision_choice_reaches_the_session_and_bf16_needs_cuda(dock, qtbot):
    _viewer, widget = dock
    track = _session(widget, qtbot)
    track.precision.setCurrentText("fp32")
    assert track.session.precision == "fp32"
    track.precision.setCurrentText("bf16")  # the tiny model runs on the CPU here
    assert track.session.precision == "fp32" and track.precision.currentText() == "fp32"
    track.precision.setCurrentText("auto")
    track.start_session()  # a new session takes the panel's choice
    assert track.session.precision == "auto"


def test_track_with_new_cells_adds_the_cells_found_later(dock, qtbot):
    """With "New cells every N frames", Track (forward) also tracks the cells it finds outside
    the tracked masks, each from the frame where it was found (the CLI's --detect-new-cells);
    From / To frame and Direction backward do not combine with it, and the panel says so."""
    viewer, widget = dock
    track = _demo_session(widget, qtbot)
    first = int(np.unique(np.asarray(viewer.layers["mother machine TRA"].data[0]))[1])
    track.cell.setValue(first)
    _click(qtbot, track, 0, *_gt_centre(viewer, 0, first))
    track.direction.setCurrentText("forward")
    track.new_cells.setValue(5)
    track.start_frame.setValue(2)
    track.track()
    assert "whole movie" in track.status.text() and track.worker is None
    track.start_frame.setValue(-1)
    track.direction.setCurrentText("backward")
    track.track()
    assert "forward" in track.status.text() and track.worker is None
    track.direction.setCurrentText("forward")
    track.track()
    _wait_idle(qtbot, widget.state)
    lineage = track.session.lineage()
    added = [i for i in track.session.object_ids if i != first]
    assert added, track.status.text()
    assert all(lineage[i].begin in range(5, 40, 5) for i in added), lineage
    assert (np.asarray(viewer.layers[LABELS_NAME].data[-1]) > 0).any()
    # the estimate (the movie's length) is reached: every frame was counted, none beyond it
    assert track.bar.value() == track.bar.maximum() == track.session.num_frames


def test_division_options_reach_the_session(dock, qtbot):
    """The "Division options" form (DivisionConfig, like the CLI's flags) sets the session's
    thresholds when it starts and at every Track; a value the config refuses is said once and
    changes nothing."""
    _viewer, widget = dock
    track = widget.track_panel
    form = track.division_options
    form.widgets["split_min_area"].setValue(77)
    track.image.select("mother machine")
    track.start_session()
    assert track.session.division_config == DivisionConfig(split_min_area=77)
    form.widgets["split_min_fraction"].setValue(0.4)
    track.divisions.setCurrentText("split")
    track.track()  # no cells yet: nothing runs, but the options are the session's now
    _wait_idle(qtbot, widget.state)
    assert track.session.division_config == DivisionConfig(
        split_min_area=77, split_min_fraction=0.4
    )
    form.widgets["div_iou_thresh"].setValue(1.5)
    track.track()
    assert "div_iou_thresh" in track.status.text()
    assert track.session.division_config.div_iou_thresh == DivisionConfig().div_iou_thresh
    running = track.session
    track.start_session()  # the refused value does not end the running session either
    assert track.session is running and "div_iou_thresh" in track.status.text()


def test_loading_shows_a_progress_indicator_until_done(make_napari_viewer, qtbot):
    from napari.utils import progress

    viewer = make_napari_viewer()
    widget = CellSAM2Widget(viewer)
    widget.model_panel.add_spec("tiny")
    with qtbot.waitSignal(widget.state.model_changed, timeout=60_000):
        widget.model_panel.load("tiny")
        assert any(bar.desc == "loading tiny" for bar in progress._all_instances)
    _wait_idle(qtbot, widget.state)
    assert not any(bar.desc == "loading tiny" for bar in progress._all_instances)


def test_detect_cells_seeds_editable_cells_with_the_demo_model(dock, qtbot):
    """'Detect cells' with the shipped demo model: the sample's first-frame cells become session
    cells without a click, labelled on that frame; a second press adds none; Undo removes them."""
    viewer, widget = dock
    track = _demo_session(widget, qtbot)
    viewer.dims.set_current_step(0, 0)
    track.detect_cells()
    _wait_idle(qtbot, widget.state)
    qtbot.waitUntil(lambda: track.pending_previews == 0, timeout=60_000)
    found = track.session.object_ids
    gt = np.asarray(viewer.layers["mother machine TRA"].data[0])
    assert len(found) >= 2, track.status.text()
    assert track.status.text().startswith(f"found {len(found)} new cell")
    labels = viewer.layers[LABELS_NAME].data[0]
    assert set(np.unique(labels)) - {0} == set(found)
    assert ((labels > 0) & (gt > 0)).sum() > 0.5 * (labels > 0).sum()  # mostly on real cells
    track.detect_cells()
    _wait_idle(qtbot, widget.state)
    assert track.session.object_ids == found  # the same cells are not added twice
    track.undo()
    _wait_idle(qtbot, widget.state)
    assert track.session.object_ids == found  # undo of the second (empty) detection
    # the "Detection options" form reaches the detector: on frame 5 (nothing tracked there
    # yet) no cell is this large, and with the default minimum area the cells are found
    viewer.dims.set_current_step(0, 5)
    area = track.detect_options.widgets["min_area"]
    default_area = area.value()
    area.setValue(1_000_000)
    track.detect_cells()
    _wait_idle(qtbot, widget.state)
    assert track.session.object_ids == found and "no new cell found" in track.status.text()
    track.detect_options.widgets["nms_iou"].setValue(2.0)  # refused by DetectConfig: said, no job
    track.detect_cells()
    assert "nms_iou" in track.status.text() and track.session.object_ids == found
    track.detect_options.widgets["nms_iou"].setValue(0.5)
    area.setValue(default_area)
    track.detect_cells()
    _wait_idle(qtbot, widget.state)
    assert len(track.session.object_ids) >= len(found) + 2, track.status.text()
