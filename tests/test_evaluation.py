"""py-ctcmetrics wrapper: perfect results score 1, perturbations lower the right metric, and
the py-ctcmetrics pitfalls (frame offsets, 4-digit names, partial results, small dtypes, odd
folder names) are handled."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tifffile

from napari_cellsam2.ctc import CTCFormatError, Lineage, read_gt, write_gt, write_res
from napari_cellsam2.evaluation import (
    DEFAULT_METRICS,
    PartialResultWarning,
    evaluate_arrays,
    evaluate_folders,
    format_table,
    scores_to_json,
)

CORE = ["Valid", "TRA", "SEG", "DET", "LNK"]


def synthetic_sequence(frames: int = 8, size: int = 64) -> tuple[np.ndarray, dict[int, int]]:
    """Moving squares: 1 and 2 move all along, 3 divides into 4 + 5 at frame 4, 6 leaves at 3."""
    labels = np.zeros((frames, size, size), np.uint16)
    for t in range(frames):
        labels[t, 5:15, 5 + 2 * t : 15 + 2 * t] = 1
        labels[t, 40:50, 5 + t : 15 + t] = 2
        if t < 4:
            labels[t, 25:35, 40:50] = 3
            labels[t, 52:60, 50:58] = 6
        else:
            labels[t, 20:28, 40:50] = 4
            labels[t, 32:40, 40:50] = 5
    return labels, {4: 3, 5: 3}


@pytest.fixture
def gt_data():
    labels, parents = synthetic_sequence()
    return labels, Lineage.from_labels(labels, parents)


@pytest.fixture
def gt_dir(tmp_path, gt_data):
    labels, lineage = gt_data
    # A folder not named NN_GT: py-ctcmetrics' recursive mode would not find it.
    return write_gt(tmp_path / "truth", labels, lineage, seg_frames=[0, 2, 6])


def drop_cell(labels: np.ndarray, label: int, frame: int) -> tuple[np.ndarray, Lineage]:
    """Remove ``label`` on ``frame``; the part after the gap becomes a new track (CTC-valid)."""
    out = labels.copy()
    out[frame][out[frame] == label] = 0
    new = int(out.max()) + 1
    after = out[frame + 1 :]
    after[after == label] = new
    return out, Lineage.from_labels(out, {4: 3, 5: 3})


def test_round_trip_through_our_reader_scores_perfect(tmp_path, gt_dir):
    gt = read_gt(gt_dir)
    labels = np.asarray(gt.tra.masks)
    res = write_res(tmp_path / "out", labels, gt.tra.lineage)

    scores = evaluate_folders(gt_dir, res)

    assert list(scores) == list(DEFAULT_METRICS)
    for name in (*CORE, "OP_CTB", "CT", "TF", "BC(0)"):
        assert scores[name] == 1.0, name


def test_missing_detection_lowers_det_and_tra(gt_dir, gt_data):
    labels, _ = gt_data
    gap, lineage = drop_cell(labels, label=1, frame=3)  # frame 3 carries no SEG annotation

    scores = evaluate_arrays(gt_dir, gap, lineage, metrics=[*CORE, "CT", "AOGM_FN"])

    assert scores["Valid"] == 1.0
    assert scores["DET"] < 1.0
    assert scores["TRA"] < 1.0
    assert scores["TRA"] > 0.5  # one of 42 detections missing, not a wreck
    assert scores["LNK"] < 1.0
    assert scores["CT"] < 1.0  # track 1 is no longer complete
    assert scores["AOGM_FN"] == 1
    assert scores["SEG"] == 1.0  # SEG frames 0, 2, 6 are untouched


def test_wrong_parent_lowers_linking_only(gt_dir, gt_data):
    labels, _ = gt_data
    wrong = Lineage.from_labels(labels, {4: 6, 5: 3})  # 6 ends at frame 3 too, so CTC-valid

    scores = evaluate_arrays(gt_dir, labels, wrong, metrics=[*CORE, "BC(0)"])

    assert scores["LNK"] < 1.0
    assert scores["TRA"] < 1.0
    assert scores["BC(0)"] < 1.0
    assert scores["SEG"] == 1.0
    assert scores["DET"] == 1.0


def test_partial_result_is_scored_as_empty_frames(tmp_path, gt_dir, gt_data):
    labels, _ = gt_data
    short = labels[:5]
    res = write_res(tmp_path / "short", short, Lineage.from_labels(short, {4: 3, 5: 3}))

    with pytest.warns(PartialResultWarning, match=r"frame\(s\) 5-7") as record:
        scores = evaluate_folders(gt_dir, res, CORE)
    assert str(res) in str(record[0].message)

    assert scores["Valid"] == 1.0
    assert 0.0 < scores["DET"] < 1.0
    assert 0.0 < scores["SEG"] < 1.0  # SEG frame 6 has no result mask
    # Same as a full-length result with empty masks on the missing frames.
    padded = np.concatenate([short, np.zeros_like(labels[5:])])
    explicit = evaluate_arrays(gt_dir, padded, Lineage.from_labels(padded, {4: 3, 5: 3}), 0, CORE)
    assert scores == explicit

    with pytest.raises(CTCFormatError, match="lacks ground-truth frame") as err:
        evaluate_folders(gt_dir, res, CORE, allow_partial=False)
    assert err.value.path == res


def test_result_frames_outside_ground_truth_raise(tmp_path, gt_dir, gt_data):
    labels, _ = gt_data
    shifted = Lineage.from_labels(labels, {4: 3, 5: 3}, first_frame=3)
    res = write_res(tmp_path / "late", labels, shifted, first_frame=3)

    with pytest.raises(CTCFormatError, match="result frame 8 lies outside") as err:
        evaluate_folders(gt_dir, res)
    assert err.value.path == res


@pytest.mark.parametrize("first_frame", [5, 996])  # 996 + 8 frames -> 4-digit names
def test_frame_offset_and_four_digit_names_score_like_frame_zero(tmp_path, gt_data, first_frame):
    labels, lineage = gt_data
    gap, gap_lineage = drop_cell(labels, label=2, frame=2)
    gt0 = write_gt(tmp_path / "gt0", labels, lineage, seg_frames=[0, 2])
    reference = evaluate_arrays(gt0, gap, gap_lineage, 0, CORE)

    shifted = Lineage.from_labels(labels, {4: 3, 5: 3}, first_frame=first_frame)
    gt = write_gt(
        tmp_path / "gt",
        labels,
        shifted,
        seg_frames=[first_frame, first_frame + 2],
        first_frame=first_frame,
    )
    gap_shifted = Lineage.from_labels(gap, {4: 3, 5: 3}, first_frame=first_frame)
    if first_frame >= 1000 - len(labels):
        assert (gt / "TRA" / f"man_track{first_frame:04d}.tif").is_file()

    assert evaluate_arrays(gt, labels, shifted, first_frame, CORE) == dict.fromkeys(CORE, 1.0)
    assert evaluate_arrays(gt, gap, gap_shifted, first_frame, CORE) == reference
    assert reference["DET"] < 1.0 and reference["SEG"] < 1.0  # frame 2 is a SEG frame here


def test_ground_truth_without_seg_gives_no_seg_score(tmp_path, gt_data):
    labels, lineage = gt_data
    gt = write_gt(tmp_path / "gt", labels, lineage)  # TRA only

    scores = evaluate_arrays(gt, labels, lineage, metrics=[*CORE, "OP_CTB"])

    assert scores["SEG"] is None
    assert scores["OP_CTB"] is None
    assert scores["TRA"] == 1.0


def test_seg_only_ground_truth_gives_seg_alone(tmp_path, gt_data):
    labels, lineage = gt_data
    gt = write_gt(tmp_path / "gt", labels, lineage, seg_frames=[1, 4])
    for f in (gt / "TRA").iterdir():
        f.unlink()
    (gt / "TRA").rmdir()
    gap, gap_lineage = drop_cell(labels, label=1, frame=4)

    assert evaluate_arrays(gt, labels, lineage, metrics=CORE) == {
        "Valid": None,
        "TRA": None,
        "SEG": 1.0,
        "DET": None,
        "LNK": None,
    }
    assert evaluate_arrays(gt, gap, gap_lineage, metrics=["SEG"])["SEG"] == pytest.approx(
        (4 + 3) / 8  # 8 annotated cells on frames 1 and 4, one of them missed
    )


def test_branching_correctness_is_undefined_without_gt_divisions(tmp_path, gt_data):
    labels, _ = gt_data
    labels = labels.copy()
    labels[labels >= 3] = 0  # no division left
    lineage = Lineage.from_labels(labels)
    gt = write_gt(tmp_path / "gt", labels, lineage)

    scores = evaluate_arrays(gt, labels, lineage, metrics=["BC(0)", "BIO(0)", "CT", "TF"])

    assert scores["BC(0)"] is None  # py-ctcmetrics alone would say 0
    assert scores["BIO(0)"] == 1.0  # averaged over the defined CT and TF only
    assert scores["CT"] == scores["TF"] == 1.0


def test_link_score_is_undefined_without_gt_links(tmp_path, gt_data):
    labels, _ = gt_data
    two = labels[:2].copy()
    two[1] = np.where(two[1] > 0, two[1] + 10, 0)  # frame 1 holds new cells only: no links
    lineage = Lineage.from_labels(two)
    gt = write_gt(tmp_path / "gt", two, lineage, seg_frames=[0])

    scores = evaluate_arrays(gt, two, lineage, metrics=CORE)

    assert scores["LNK"] is None
    assert scores["TRA"] == scores["DET"] == scores["SEG"] == 1.0


def test_single_frame_ground_truth_gives_seg_alone(tmp_path, gt_data):
    labels, _ = gt_data
    one = labels[:1]
    lineage = Lineage.from_labels(one)
    gt = write_gt(tmp_path / "gt", one, lineage, seg_frames=[0])

    scores = evaluate_arrays(gt, one, lineage, metrics=CORE)

    assert scores == {"Valid": None, "TRA": None, "SEG": 1.0, "DET": None, "LNK": None}


def test_small_result_dtype_does_not_overflow(tmp_path, gt_data):
    # py-ctcmetrics offsets result labels in the file's dtype: uint8 labels 191.. plus GT
    # labels 101.. wrap around and score 0 without our int64 copy.
    labels, _ = gt_data
    gt_labels = np.where(labels > 0, labels + 100, 0).astype(np.uint16)
    gt = write_gt(
        tmp_path / "gt", gt_labels, Lineage.from_labels(gt_labels, {104: 103, 105: 103}), [0, 4]
    )
    res = tmp_path / "res"
    res.mkdir()
    res_labels = np.where(labels > 0, labels + 190, 0).astype(np.uint8)
    for t, frame in enumerate(res_labels):
        tifffile.imwrite(res / f"mask{t:03d}.tif", frame)
    Lineage.from_labels(res_labels, {194: 193, 195: 193}).write(res / "res_track.txt")

    assert evaluate_folders(gt, res, CORE) == dict.fromkeys(CORE, 1.0)


def test_stray_files_in_result_folder_are_ignored(tmp_path, gt_dir, gt_data):
    labels, lineage = gt_data
    res = write_res(tmp_path / "res", labels, lineage)
    tifffile.imwrite(res / "overview.tif", np.zeros((4, 4), np.uint8))  # py-ctcmetrics reads it

    assert evaluate_folders(gt_dir, res, CORE) == dict.fromkeys(CORE, 1.0)


def test_result_without_tracks_is_invalid(tmp_path, gt_dir, gt_data):
    labels, _ = gt_data
    empty = np.zeros_like(labels)

    with pytest.warns(UserWarning, match="no tracks"):
        scores = evaluate_arrays(gt_dir, empty, Lineage(), metrics=CORE)

    assert scores == {"Valid": 0.0, "TRA": None, "SEG": None, "DET": None, "LNK": None}


def test_bad_folders_raise_naming_the_culprit(tmp_path, gt_dir, gt_data):
    labels, lineage = gt_data
    res = write_res(tmp_path / "res", labels, lineage)

    with pytest.raises(CTCFormatError) as err:
        evaluate_folders(tmp_path / "nope", res)
    assert err.value.path == tmp_path / "nope"

    with pytest.raises(CTCFormatError) as err:
        evaluate_folders(gt_dir, tmp_path / "nothing")
    assert err.value.path == tmp_path / "nothing"

    (res / "res_track.txt").write_text("1 0 7 0\n")  # other labels in the masks lack tracks
    with pytest.raises(CTCFormatError, match="has no track") as err:
        evaluate_folders(gt_dir, res)
    assert err.value.path == res / "res_track.txt"

    small = write_res(
        tmp_path / "small", labels[:, :32, :32], Lineage.from_labels(labels[:, :32, :32])
    )
    with pytest.raises(CTCFormatError, match="mask shape") as err:
        evaluate_folders(gt_dir, small)
    assert err.value.path == small


def test_metric_selection(gt_dir, gt_data):
    labels, lineage = gt_data
    names = ["TRA", "AOGM", "BIO(1)", "OP_CLB(1)", "IDF1", "MOTA"]

    scores = evaluate_arrays(gt_dir, labels, lineage, metrics=names)

    assert list(scores) == names
    assert scores["AOGM"] == 0
    assert all(scores[n] == 1.0 for n in names if n != "AOGM")
    with pytest.raises(ValueError, match=r"unknown metric 'TRAA'.*supported: .*TRA"):
        evaluate_arrays(gt_dir, labels, lineage, metrics=["TRAA"])


def test_worker_processes_give_the_same_scores(gt_dir, gt_data):
    labels, _ = gt_data
    gap, lineage = drop_cell(labels, label=1, frame=3)

    serial = evaluate_arrays(gt_dir, gap, lineage, workers=1)
    parallel = evaluate_arrays(gt_dir, gap, lineage, workers=2)

    assert parallel == serial
    assert serial["DET"] < 1.0


def test_evaluation_prints_nothing(capsys, gt_dir, gt_data):
    labels, lineage = gt_data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor warns on a clean, complete result
        evaluate_arrays(gt_dir, labels, lineage)
    assert capsys.readouterr() == ("", "")


def test_format_table_aligns_rows_and_marks_missing_scores():
    table = format_table(
        {
            "baseline": {"TRA": 0.91234, "SEG": None, "AOGM": 12.0},
            "fine-tuned": {"TRA": 0.95, "LNK": 0.5},
        }
    )
    lines = table.splitlines()

    assert lines[0].split() == ["TRA", "SEG", "AOGM", "LNK"]
    assert lines[1].split() == ["baseline", "0.9123", "-", "12", "-"]
    assert lines[2].split() == ["fine-tuned", "0.9500", "-", "-", "0.5000"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns end together
    assert lines[1].index("0.9123") == lines[2].index("0.9500")


def test_scores_to_json_uses_null_for_undefined():
    text = scores_to_json({"run": {"TRA": 0.5, "SEG": None, "X": float("nan")}})
    assert json.loads(text) == {"run": {"TRA": 0.5, "SEG": None, "X": None}}
