"""Hand-painted labels become a CTC-valid result."""

from __future__ import annotations

import numpy as np

from napari_cellsam2.ctc.repair import make_consistent


def test_valid_input_is_returned_unchanged(division_labels):
    labels, lineage = make_consistent(division_labels, {2: 1, 3: 1})
    assert labels is division_labels
    assert lineage.parents == {2: 1, 3: 1}
    lineage.validate(labels)


def test_gap_splits_the_track_with_a_link(division_labels):
    painted = division_labels.copy()
    painted[2][painted[2] == 4] = 0  # erased on frame 2 only
    labels, lineage = make_consistent(painted, {2: 1, 3: 1})
    lineage.validate(labels)
    assert painted[3].max() == 4  # the input is not modified
    new = int(labels[3][labels[3] > 4].max())
    assert lineage[4].end == 1 and lineage[new].begin == 3 and lineage[new].parent == 4


def test_rule_breaking_parent_link_is_dropped(division_labels):
    painted = division_labels.copy()
    painted[3, 0:2, 0:2] = 1  # mother painted into the daughters' first frame
    labels, lineage = make_consistent(painted, {2: 1, 3: 1})
    lineage.validate(labels)
    assert lineage[1].end == 3 and lineage[2].parent == 0


def test_empty_labels():
    _, lineage = make_consistent(np.zeros((3, 4, 4), np.uint16))
    assert len(lineage) == 0


def test_export_reports_progress_and_a_cancel_leaves_nothing(division_labels, tmp_path):
    from napari_cellsam2.ctc import open_path
    from napari_cellsam2.ctc.repair import iter_export_labels

    labels, parents = division_labels, {2: 1, 3: 1}
    steps = iter_export_labels(tmp_path / "01_GT", labels, parents, fmt="gt")
    seen = [next(steps), next(steps)]
    assert seen == [(1, 2 * len(labels)), (2, 2 * len(labels))]  # TRA, then SEG frames
    steps.close()  # cancelled half-way
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind

    steps = iter_export_labels(tmp_path / "01_RES", labels, parents, fmt="res")
    progress = list(steps)
    assert progress[-1] == (len(labels), len(labels))
    assert open_path(tmp_path / "01_RES").res.lineage.parents == parents
