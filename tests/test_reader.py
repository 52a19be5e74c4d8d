"""The napari reader as a plain function: which paths it claims and the layer tuples it builds."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_cellsam2._reader import napari_get_reader, read_ctc
from napari_cellsam2.ctc import (
    CTCFormatError,
    CTCWarning,
    LazyFrames,
    Lineage,
    open_path,
    write_gt,
    write_images,
)
from napari_cellsam2.ctc import write_res as write_ctc_res
from napari_cellsam2.ctc.napari_layers import (
    META_KEY,
    PARENTS_KEY,
    ctc_kind,
    parents_from_graph,
    tracks_from_labels,
)

PARENTS = {2: 1, 3: 1}


def by_name(layers):
    return {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in layers}


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


@pytest.fixture
def offset_sequence(tmp_path: Path, division_labels: np.ndarray) -> Path:
    """``01`` starting at CTC frame 5 with TRA, SEG on frames 6 and 9, and a RES without links."""
    first = 5
    images = ((division_labels > 0) * 900 + 100 + np.arange(6)[:, None, None]).astype(np.uint16)
    write_images(tmp_path / "01", images, first_frame=first)
    lineage = Lineage.from_labels(division_labels, PARENTS, first_frame=first)
    write_gt(tmp_path / "01_GT", division_labels, lineage, seg_frames=[6, 9], first_frame=first)
    res = np.where(division_labels == 4, 0, division_labels)
    write_ctc_res(tmp_path / "01_RES", res, Lineage.from_labels(res, first_frame=first), first)
    return tmp_path / "01"


def test_claims_every_ctc_folder_kind(offset_sequence: Path):
    root = offset_sequence.parent
    for path in (offset_sequence, root / "01_GT", root / "01_GT" / "TRA", root / "01_RES", root):
        assert napari_get_reader(str(path)) is read_ctc, path
    assert napari_get_reader([str(offset_sequence)]) is read_ctc
    assert [ctc_kind(root / p) for p in ("01", "01_GT", "01_GT/SEG", "01_RES", ".")] == [
        "sequence",
        "gt",
        "gt_part",
        "res",
        "dataset",
    ]


def test_leaves_other_paths_to_other_readers(tmp_path: Path, offset_sequence: Path):
    other = tmp_path / "photos"
    (other / "01").mkdir(parents=True)  # a "01" folder without CTC frames or siblings
    (other / "01" / "img.tif").write_bytes(b"x")
    (other / "notes").mkdir()
    tif = offset_sequence / "t005.tif"
    for path in (other, other / "01", other / "notes"):  # folders: the user learns why
        with pytest.warns(CTCWarning, match="CellSAM2 cannot open"):
            assert napari_get_reader(str(path)) is None, path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # files and missing paths: not ours, nothing to say
        for path in (tif, tmp_path / "missing"):
            assert napari_get_reader(str(path)) is None, path
        assert napari_get_reader([str(offset_sequence), str(offset_sequence)]) is None


def test_sequence_layers_names_types_and_laziness(offset_sequence: Path, division_labels):
    layers = read_ctc(str(offset_sequence))
    assert [(k["name"], kind) for _, k, kind in layers] == [
        ("01", "image"),
        ("01 TRA", "labels"),
        ("01 SEG", "labels"),
        ("01 RES", "labels"),
        ("01 TRA tracks", "tracks"),
        ("01 RES tracks", "tracks"),
    ]
    named = by_name(layers)
    image, image_kw, _ = named["01"]
    assert isinstance(image, LazyFrames) and not isinstance(image, np.ndarray)
    assert image.shape == (6, 40, 30)
    assert len(image._cache) <= 5  # only the frames sampled for contrast limits were read
    full = np.asarray(image)
    assert image_kw["contrast_limits"] == (float(full.min()), float(full.max()))
    for name in ("01", "01 TRA", "01 SEG", "01 RES", "01 TRA tracks"):
        meta = named[name][1]["metadata"][META_KEY]
        assert (meta["sequence"], meta["first_frame"]) == ("01", 5)
        assert meta["folder"] == str(offset_sequence)
    np.testing.assert_array_equal(np.asarray(named["01 TRA"][0]), division_labels)
    assert named["01 TRA"][1]["metadata"][PARENTS_KEY] == PARENTS
    assert named["01 RES"][1]["metadata"][PARENTS_KEY] == {}
    assert named["01 TRA tracks"][1]["metadata"][META_KEY]["of"] == "tra"


def test_only_sampled_image_frames_are_read(tmp_path: Path):
    write_images(tmp_path / "01", np.arange(40 * 8 * 8, dtype=np.uint16).reshape(40, 8, 8))
    image, kwargs, _ = read_ctc(str(tmp_path / "01"))[0]
    assert sorted(image._cache) == [0, 10, 20, 29, 39]  # 5 evenly spaced frames of 40
    assert kwargs["contrast_limits"] == (0.0, 40 * 64 - 1.0)


def test_seg_is_placed_on_its_ctc_frames(offset_sequence: Path, division_labels):
    seg = np.asarray(by_name(read_ctc(str(offset_sequence)))["01 SEG"][0])
    assert seg.shape == division_labels.shape
    for pos in range(6):  # CTC frames 6 and 9 are positions 1 and 4
        expected = division_labels[pos] if pos in (1, 4) else 0
        np.testing.assert_array_equal(seg[pos], expected)


def test_tracks_are_label_centroids_with_parent_graph(offset_sequence: Path, division_labels):
    named = by_name(read_ctc(str(offset_sequence)))
    data, kwargs, _ = named["01 TRA tracks"]
    assert kwargs["graph"] == {2: [1], 3: [1]}
    assert data.shape == (int(sum(len(np.unique(f)) - 1 for f in division_labels)), 4)
    for label, t, y, x in data:
        np.testing.assert_allclose([y, x], centroid(division_labels[int(t)] == label))
    assert set(data[data[:, 0] == 1, 1]) == {0, 1, 2}  # 0-based positions, not CTC indices
    assert set(data[data[:, 0] == 2, 1]) == {3, 4, 5}
    res_data, res_kwargs, _ = named["01 RES tracks"]
    assert res_kwargs["graph"] == {} and 4 not in res_data[:, 0]


def test_tracks_with_huge_label_values_match_small_ones(division_labels):
    big = division_labels.astype(np.uint32) * 5_000_000
    small_data, _ = tracks_from_labels(division_labels, PARENTS)
    big_data, big_graph = tracks_from_labels(big, {2 * 5_000_000: 5_000_000})
    np.testing.assert_allclose(big_data[:, 1:], small_data[:, 1:])
    np.testing.assert_array_equal(big_data[:, 0], small_data[:, 0] * 5_000_000)
    assert big_graph == {10_000_000: [5_000_000]}


def test_graph_drops_links_to_absent_labels(division_labels):
    _, graph = tracks_from_labels(division_labels, {2: 1, 3: 99})
    assert graph == {2: [1]}


def test_parents_from_graph_allows_one_parent():
    assert parents_from_graph({5: [2], 6: 2, 7: []}) == {5: 2, 6: 2}
    with pytest.raises(CTCFormatError, match="track 5 has 2 parents"):
        parents_from_graph({5: [1, 2]})


def test_dataset_root_with_splits_prefixes_and_shows_first(tmp_path: Path, division_labels):
    lineage = Lineage.from_labels(division_labels, PARENTS)
    for split in ("train", "val"):
        ctc = tmp_path / "ds" / split / "CTC"
        write_images(ctc / "01", division_labels * 10)
        write_gt(ctc / "01_GT", division_labels, lineage)
    write_images(tmp_path / "ds" / "train" / "CTC" / "02", division_labels * 10)
    layers = read_ctc(str(tmp_path / "ds"))
    visible = {k["name"]: k["visible"] for _, k, _ in layers}
    assert visible == {
        "train/01": True,
        "train/01 TRA": True,
        "train/01 TRA tracks": True,
        "train/02": False,
        "val/01": False,
        "val/01 TRA": False,
        "val/01 TRA tracks": False,
    }
    assert all(isinstance(d, LazyFrames) for d, _, kind in layers if kind != "tracks")
    assert by_name(layers)["val/01"][1]["metadata"][META_KEY]["split"] == "val"


def test_a_folder_only_named_like_a_sequence_does_not_block_the_real_ones(
    tmp_path: Path, division_labels
):
    """A dataset folder beside an unrelated ``05`` (notes, a CSV) opens its sequences, in napari
    and with ``open_path``, and says which folder it left out."""
    write_images(tmp_path / "01", division_labels)
    write_gt(tmp_path / "01_GT", division_labels, Lineage.from_labels(division_labels, PARENTS))
    (tmp_path / "05").mkdir()
    (tmp_path / "05" / "data.csv").write_text("a,b\n1,2\n")
    with pytest.warns(CTCWarning, match=r"left out 05: named like a sequence") as said:
        assert napari_get_reader(str(tmp_path)) is read_ctc
        names = [k["name"] for _, k, _ in read_ctc(str(tmp_path))]
    assert names == ["01", "01 TRA", "01 TRA tracks"]
    assert sum("left out 05" in str(w.message) for w in said) == 1  # said once, not per probe
    with pytest.warns(CTCWarning, match="left out 05"):
        assert open_path(tmp_path).name == "01"


def test_plain_root_names_sequences_without_split(tmp_path: Path, division_labels):
    write_images(tmp_path / "01", division_labels)
    write_images(tmp_path / "02", division_labels)
    assert [k["name"] for _, k, _ in read_ctc(str(tmp_path))] == ["01", "02"]


def test_gt_folder_without_images_opens_gt_only(tmp_path: Path, division_labels):
    write_gt(tmp_path / "01_GT", division_labels, Lineage.from_labels(division_labels, PARENTS))
    layers = read_ctc(str(tmp_path / "01_GT" / "TRA"))
    assert [k["name"] for _, k, _ in layers] == ["01 TRA", "01 TRA tracks"]
    (tmp_path / "01").mkdir()  # the image folder is there, its frames not (yet)
    with pytest.warns(UserWarning, match="holds no image frames"):
        layers = read_ctc(str(tmp_path / "01_GT"))
    assert [k["name"] for _, k, _ in layers] == ["01 TRA", "01 TRA tracks"]
    with pytest.raises(CTCFormatError, match=r"no 'tNNN\.tif' frames"):  # asked for the images
        read_ctc(str(tmp_path / "01"))


def test_3d_slice_annotations_in_seg_do_not_stop_the_sequence_opening(ctc_sequence: Path):
    """3D CTC datasets may annotate single slices in SEG (man_seg_TTT_ZZZ.tif); those are not
    frames, and the images and TRA must still open."""
    seg = ctc_sequence.parent / "01_GT" / "SEG"
    for path in sorted(seg.glob("man_seg*.tif")):
        path.rename(seg / f"man_seg_{path.stem[-3:]}_005.tif")
    with pytest.warns(UserWarning, match="slice annotations"):
        layers = read_ctc(str(ctc_sequence))
    assert [k["name"] for _, k, _ in layers][:2] == ["01", "01 TRA"]


def test_broken_ctc_folder_raises_naming_the_file(ctc_sequence: Path):
    (ctc_sequence.parent / "01_GT" / "TRA" / "man_track.txt").unlink()
    reader = napari_get_reader(str(ctc_sequence))
    assert reader is read_ctc
    with pytest.raises(CTCFormatError, match=r"man_track\.txt: lineage file is missing"):
        reader(str(ctc_sequence))


def test_corrupt_first_image_raises_naming_it(ctc_sequence: Path):
    (ctc_sequence / "t000.tif").write_bytes(b"not a tiff")
    with pytest.raises(CTCFormatError, match=r"t000\.tif: corrupt"):
        read_ctc(str(ctc_sequence))


def test_3d_time_lapse_opens_with_z_tracks(tmp_path: Path):
    labels = np.zeros((4, 5, 16, 16), np.uint16)
    for t in range(4):
        labels[t, 1:4, 2 + t : 6 + t, 3:7] = 1
        labels[t, 2:5, 10:14, 9:13] = 2
    write_images(tmp_path / "01", labels * 7)
    write_gt(tmp_path / "01_GT", labels, Lineage.from_labels(labels))
    named = by_name(read_ctc(str(tmp_path / "01")))
    assert named["01"][0].shape == named["01 TRA"][0].shape == (4, 5, 16, 16)
    data = named["01 TRA tracks"][0]
    assert data.shape == (8, 5)
    for label, t, z, y, x in data:
        np.testing.assert_allclose([z, y, x], centroid(labels[int(t)] == label))
