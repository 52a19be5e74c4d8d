"""Lineage rules, building from labels, CellSAM2 cleaning."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellsam2.ctc import CTCFormatError, Lineage, Track


def test_from_labels_builds_begin_end_and_parents(division_labels):
    lin = Lineage.from_labels(division_labels, {2: 1, 3: 1}, first_frame=10)
    assert list(lin) == [
        Track(1, 10, 12, 0),
        Track(2, 13, 15, 1),
        Track(3, 13, 15, 1),
        Track(4, 10, 15, 0),
    ]
    assert lin.divisions == {1: [2, 3]}
    lin.validate(division_labels, first_frame=10)


def test_parse_round_trips_text():
    text = "1 0 2 0\n2 3 5 1\n3 3 4 1\n"
    assert Lineage.parse(text).to_text() == text


def test_parent_must_end_before_daughter_starts():
    lin = Lineage.parse("1 0 3 0\n2 3 5 1\n")
    with pytest.raises(CTCFormatError, match="parent 1 ends at frame 3"):
        lin.validate()


def test_missing_parent_is_rejected():
    with pytest.raises(CTCFormatError, match="parent 9, which has no track"):
        Lineage.parse("1 0 3 9\n").validate()


def test_label_outside_its_track_is_rejected(division_labels):
    lin = Lineage.parse("1 0 1 0\n2 3 5 1\n3 3 5 1\n4 0 5 0\n")
    with pytest.raises(CTCFormatError, match="label 1 appears on frame 2"):
        lin.validate(division_labels)


def test_mask_label_without_track_is_rejected(division_labels):
    lin = Lineage.parse("1 0 2 0\n2 3 5 1\n3 3 5 1\n")
    with pytest.raises(CTCFormatError, match="label 4 is in the masks"):
        lin.validate(division_labels)


def test_track_without_mask_is_rejected(division_labels):
    lin = Lineage.parse("1 0 2 0\n2 3 5 1\n3 3 5 1\n4 0 5 0\n7 0 1 0\n")
    with pytest.raises(CTCFormatError, match=r"label 7 has track 0\.\.1 but is in no mask"):
        lin.validate(division_labels)


def test_cleaning_drops_single_child_and_late_daughter_links():
    lin = Lineage.parse(
        "1 0 2 0\n2 3 5 1\n3 3 5 1\n"  # a real division: kept
        "4 0 2 0\n5 3 5 4\n"  # single child: dropped
        "6 0 1 0\n7 3 5 6\n8 2 5 6\n"  # 7 starts two frames after its parent ends: dropped
    )
    cleaned = lin.cleaned()
    assert cleaned.parents == {2: 1, 3: 1, 8: 6}
    assert lin.parents[5] == 4  # the original is untouched


def test_from_labels_accepts_an_iterator_of_frames():
    frames = [np.array([[0, 1]]), np.array([[1, 0]]), np.array([[0, 2]])]
    lin = Lineage.from_labels(iter(frames))
    assert [(t.label, t.begin, t.end) for t in lin] == [(1, 0, 1), (2, 2, 2)]
