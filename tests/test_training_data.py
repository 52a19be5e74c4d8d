"""Training clips: sampling, letterboxed targets, divisions, augmentations, batching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from napari_cellsam2.ctc import CTCFormatError, Lineage, open_sequence, write_gt, write_images
from napari_cellsam2.model.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Letterbox,
    preprocess_frame,
)
from napari_cellsam2.training.augment import (
    AugmentConfig,
    GeometricParams,
    apply_geometric,
)
from napari_cellsam2.training.config import load_config, to_dataclass
from napari_cellsam2.training.data import CTCClipDataset, available_splits, collate_clips

H, W, S = 40, 64, 128  # non-square frames, canvas scale 2
DIVIDE_AT = 3  # cell 3 ends at frame 2, daughters 4 and 5 begin at frame 3


def make_sequence(frames: int) -> tuple[np.ndarray, np.ndarray, Lineage]:
    """Static cell 1, moving cell 2, cell 3 dividing into 4 and 5; bright cells on dim ground."""
    labels = np.zeros((frames, H, W), np.uint16)
    for t in range(frames):
        labels[t, 5:13, 5:13] = 1
        labels[t, 25:31, 10 + 2 * t : 16 + 2 * t] = 2
        if t < DIVIDE_AT:
            labels[t, 20:28, 40:48] = 3
        else:
            labels[t, 14:20, 40:46] = 4
            labels[t, 28:34, 40:46] = 5
    images = np.where(labels > 0, 1000, 100).astype(np.uint16)
    return images, labels, Lineage.from_labels(labels, parents={4: 3, 5: 3})


def write_sequence(folder: Path, name: str, frames: int) -> None:
    images, labels, lineage = make_sequence(frames)
    write_images(folder / name, images)
    write_gt(folder / f"{name}_GT", labels, lineage)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """CellSAM2 layout: train has sequences of 6 and 5 frames, val one of 4."""
    root = tmp_path / "data"
    write_sequence(root / "train" / "CTC", "01", 6)
    write_sequence(root / "train" / "CTC", "02", 5)
    write_sequence(root / "val" / "CTC", "01", 4)
    return root


def plain(**options) -> dict:
    return {"resolution": S, "augment": False, "max_num_bkgd_objects": 0, **options}


def denormalised(pixel_values: torch.Tensor) -> torch.Tensor:
    """Channel 0 of (…, 3, S, S) model input back in [0, 1] intensity."""
    return pixel_values[..., 0, :, :] * IMAGENET_STD[0] + IMAGENET_MEAN[0]


def test_every_start_frame_is_a_clip_with_contract_shapes(data_dir: Path) -> None:
    ds = CTCClipDataset(data_dir, "train", num_frames=3, **plain())
    assert len(ds) == (6 - 3 + 1) + (5 - 3 + 1)
    assert [ds.locate(i) for i in (0, 3, 4, 6)] == [
        ("train/CTC/01", 0),
        ("train/CTC/01", 3),
        ("train/CTC/02", 0),
        ("train/CTC/02", 2),
    ]
    sample = ds[0]
    n = sample.num_objects
    assert sample.pixel_values.shape == (3, 3, S, S)
    assert sample.pixel_values.dtype == torch.float32
    assert sample.targets.shape == (3, n, S, S)
    assert sample.targets.dtype == torch.bool
    assert (
        sample.prompt_frame.shape == sample.object_ids.shape == sample.is_background.shape == (n,)
    )
    rows, cols = Letterbox(H, W, S).resized_hw
    assert (rows, cols) == (80, 128)
    expected_region = torch.zeros((S, S), dtype=torch.bool)
    expected_region[:rows, :cols] = True
    assert torch.equal(sample.valid_region, expected_region)
    assert available_splits(data_dir) == ["train", "val"]
    val = CTCClipDataset(data_dir, "val", num_frames=3, **plain())
    assert len(val) == 2


def test_unaugmented_clip_is_inference_preprocessing_and_targets_align(data_dir: Path) -> None:
    ds = CTCClipDataset(data_dir, "train", num_frames=4, max_num_objects=10, **plain())
    images, labels, _ = make_sequence(6)
    sample = ds[1]  # frames 1..4 of sequence 01
    box = Letterbox(H, W, S)
    for t in range(4):
        expected, _ = preprocess_frame(images[1 + t], S)
        assert torch.equal(sample.pixel_values[t], expected)
        for k, label in enumerate(sample.object_ids.tolist()):
            mask = box.mask_to_model(labels[1 + t] == label) > 0.5
            assert torch.equal(sample.targets[t, k], mask)
        # The bright pixels of the letterboxed frame are exactly the union of the cell targets.
        bright = denormalised(sample.pixel_values[t]) > 0.5
        assert bright.any()
        assert torch.equal(bright, sample.targets[t].any(0))


def test_division_daughters_are_prompted_on_their_first_frame(data_dir: Path) -> None:
    ds = CTCClipDataset(data_dir, "train", num_frames=4, max_num_objects=10, **plain())
    sample = ds[1]  # frames 1..4: cell 3 on clip frames 0-1, daughters 4, 5 from clip frame 2
    ids = sample.object_ids.tolist()
    assert ids == [1, 2, 3, 4, 5]  # cells by (prompt frame, label)
    prompt = dict(zip(ids, sample.prompt_frame.tolist(), strict=True))
    assert prompt == {1: 0, 2: 0, 3: 0, 4: DIVIDE_AT - 1, 5: DIVIDE_AT - 1}
    present = sample.targets.flatten(2).any(-1)  # (T, N)
    assert present[:, ids.index(3)].tolist() == [True, True, False, False]
    for daughter in (4, 5):
        assert present[:, ids.index(daughter)].tolist() == [False, False, True, True]
    assert not sample.is_background.any()
    # A clip starting after the division holds the daughters as first-frame cells.
    late = CTCClipDataset(data_dir, "train", num_frames=2, **plain())[DIVIDE_AT]
    assert sorted(late.object_ids.tolist()) == [1, 2, 4, 5]
    assert late.prompt_frame.tolist() == [0, 0, 0, 0]


def test_mother_covers_daughters_after_her_last_frame(tmp_path: Path) -> None:
    """With the option the mother's target after the division is her daughters' union (the mask
    the split rule divides), granddaughters included; without it she vanishes."""
    images, labels, _ = make_sequence(6)
    labels[5][labels[5] == 4] = 6  # daughter 4 "divides" into 6 and 7 on the last frame
    labels[5, 14:17, 40:46] = 6
    labels[5, 17:20, 40:46] = 7
    lineage = Lineage.from_labels(labels, parents={4: 3, 5: 3, 6: 4, 7: 4})
    covered = CTCClipDataset.from_arrays(
        images, labels, lineage, num_frames=6, mother_covers_daughters=True, **plain()
    )[0]
    ids = covered.object_ids.tolist()
    slot = {label: ids.index(label) for label in (3, 4, 5, 6, 7)}
    targets = covered.targets
    for t in range(DIVIDE_AT, 6):
        family = targets[t, slot[5]] | targets[t, slot[4]] | targets[t, slot[6]]
        assert torch.equal(targets[t, slot[3]], family | targets[t, slot[7]])
    assert targets[5, slot[3]].any() and targets[5, slot[4]].any()  # 4 covers 6 and 7 on frame 5
    assert torch.equal(targets[5, slot[4]], targets[5, slot[6]] | targets[5, slot[7]])
    plain_clip = CTCClipDataset.from_arrays(images, labels, lineage, num_frames=6, **plain())[0]
    mother = plain_clip.object_ids.tolist().index(3)
    assert not plain_clip.targets[DIVIDE_AT:, mother].any()
    assert torch.equal(plain_clip.targets[:DIVIDE_AT], covered.targets[:DIVIDE_AT])
    assert plain_clip.prompt_frame.tolist() == covered.prompt_frame.tolist()
    for cell in (1, 2):  # cells without daughters are untouched
        k = ids.index(cell)
        assert torch.equal(covered.targets[:, k], plain_clip.targets[:, k])


def test_single_child_links_are_cleaned_away(tmp_path: Path) -> None:
    images, labels, _ = make_sequence(5)
    labels[labels == 5] = 0  # cell 3 now has one "daughter": CellSAM2 drops such links
    lineage = Lineage.from_labels(labels, parents={4: 3})
    ds = CTCClipDataset.from_arrays(images, labels, lineage, num_frames=5, **plain())
    assert sorted(ds[0].object_ids.tolist()) == [1, 2, 3]  # 4 is an unlinked newcomer


def test_max_num_objects_caps_cells_and_keeps_families_whole(data_dir: Path) -> None:
    ds = CTCClipDataset(data_dir, "train", num_frames=4, max_num_objects=3, **plain(augment=True))
    subsets = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        ids = set(ds[1].object_ids.tolist())  # clip with the division
        assert 1 <= len(ids) <= 3
        if 3 in ids:
            assert ids == {3, 4, 5}
        subsets.add(frozenset(ids))
    assert len(subsets) > 1  # the subset is random per epoch
    small = CTCClipDataset(data_dir, "train", num_frames=4, max_num_objects=2, **plain())
    for i in range(3):  # every clip of sequence 01 holds the division
        ids = small[i].object_ids.tolist()
        assert len(ids) <= 2
        assert 3 not in ids  # a family of three never fits, and is never split


def test_background_objects_have_empty_targets(data_dir: Path) -> None:
    ds = CTCClipDataset(
        data_dir, "train", num_frames=3, resolution=S, augment=False, max_num_bkgd_objects=3
    )
    counts = set()
    for i in range(len(ds)):
        sample = ds[i]
        bkgd = sample.is_background
        counts.add(int(bkgd.sum()))
        assert not sample.targets[:, bkgd].any()
        assert (sample.object_ids[bkgd] == 0).all()
        assert (sample.prompt_frame[bkgd] == 0).all()
        assert (sample.object_ids[~bkgd] > 0).all()
        cells = torch.nonzero(~bkgd).flatten()
        on_prompt = sample.targets[sample.prompt_frame[cells], cells]
        assert on_prompt.flatten(1).any(-1).all()  # a cell is visible on its prompt frame
        assert not bkgd[: int((~bkgd).sum())].any()  # cells first, then background
    assert counts <= {0, 1, 2, 3}
    assert len(counts) > 1


def test_background_clicks_never_land_on_a_cell_that_was_not_chosen(monkeypatch) -> None:
    """16 cells, 2 chosen: a background object ("no cell here") clicked on one of the 14 others
    taught the model that a click on a cell means no object (37 % of such clicks did)."""
    from napari_cellsam2.model.tiny import build_random_model, tiny_config
    from napari_cellsam2.training import objective
    from napari_cellsam2.training.config import ScratchConfig

    labels = np.zeros((2, 64, 64), np.uint16)
    for k in range(16):
        row, col = divmod(k, 4)
        labels[:, row * 16 + 2 : row * 16 + 12, col * 16 + 2 : col * 16 + 12] = k + 1
    images = np.where(labels > 0, 1000, 100).astype(np.uint16)
    ds = CTCClipDataset.from_arrays(
        images, labels, resolution=64, num_frames=2, augment=False,
        max_num_objects=2, max_num_bkgd_objects=8,
    )  # fmt: skip
    clicked = []
    sample = objective.sample_prompts

    def recording(first, is_background, *args):
        prompts, ok = sample(first, is_background, *args)
        clicked.extend(prompts.point_coords[is_background & ok, 0].round().long().tolist())
        return prompts, ok

    monkeypatch.setattr(objective, "sample_prompts", recording)
    model, scratch = build_random_model(tiny_config(64)), ScratchConfig()
    for seed in range(6):
        batch = collate_clips([ds[seed % len(ds)]])
        objective.clip_loss(model, batch, scratch, torch.Generator().manual_seed(seed))
    assert len(clicked) >= 10
    assert [labels[0][y, x] for x, y in clicked] == [0] * len(clicked)


def test_collate_pads_objects_across_the_batch(data_dir: Path) -> None:
    ds = CTCClipDataset(data_dir, "train", num_frames=2, max_num_objects=10, **plain())
    a, b = ds[0], ds[DIVIDE_AT]  # 3 cells (1, 2, 3) and 4 cells (1, 2, 4, 5)
    batch = collate_clips([a, b])
    assert batch.pixel_values.shape == (2, 2, 3, S, S)
    assert batch.targets.shape == (2, 2, 4, S, S)
    assert batch.obj_valid.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert not batch.targets[0, :, 3].any()
    assert batch.object_ids[0].tolist() == [1, 2, 3, 0]
    assert batch.targets.dtype == torch.float32
    assert torch.equal(batch.targets[1], b.targets.float())
    assert batch.present.shape == (2, 2, 4)
    assert batch.present[0].tolist() == [[True, True, True, False]] * 2
    moved = batch.to("cpu")
    assert torch.equal(moved.prompt_frame, batch.prompt_frame)
    loader = DataLoader(Subset(ds, [0, DIVIDE_AT, 1]), batch_size=2, collate_fn=collate_clips)
    assert [tuple(x.obj_valid.shape) for x in loader] == [(2, 4), (1, 3)]


def test_segmentation_mode_single_frame_clips(data_dir: Path) -> None:
    ds = CTCClipDataset(data_dir, "train", num_frames=1, **plain())
    assert len(ds) == 6 + 5
    sample = ds[4]  # frame 4: after the division
    assert sample.pixel_values.shape == (1, 3, S, S)
    assert sorted(sample.object_ids.tolist()) == [1, 2, 4, 5]
    assert (sample.prompt_frame == 0).all()


def test_augmentation_is_identical_on_every_frame(data_dir: Path) -> None:
    forced = AugmentConfig(
        p_hflip=1.0, p_vflip=1.0, p_affine=1.0, p_intensity=1.0, p_blur=0.0, p_noise=0.0
    )
    kwargs = {"num_frames": 4, "max_num_objects": 10, "resolution": S, "max_num_bkgd_objects": 0}
    ds = CTCClipDataset(data_dir, "train", augment=True, augment_config=forced, **kwargs)
    reference = CTCClipDataset(data_dir, "train", augment=False, **kwargs)[1]
    sample = ds[1]
    k = sample.object_ids.tolist().index(1)  # the static cell
    static = sample.targets[:, k]
    assert not torch.equal(static[0], reference.targets[0, 0])  # it was transformed
    image = denormalised(sample.pixel_values)
    for t in range(1, 4):
        assert torch.equal(static[t], static[0])
        assert torch.allclose(image[t][static[0]], image[0][static[0]])
    # Image and targets moved together: the cells' targets cover bright pixels, not background.
    cells = sample.targets.any(1)  # (T, S, S)
    inside, outside = image[cells], image[~cells & sample.valid_region]
    assert inside.mean() > outside.mean() + 0.3
    assert (inside > outside.mean()).float().mean() > 0.9
    # Padding stays padding: nothing outside the letterboxed frame.
    assert not sample.targets[..., ~sample.valid_region].any()
    assert (sample.pixel_values[..., ~sample.valid_region] == 0).all()


def test_affine_keeps_shapes_on_non_square_frames() -> None:
    yy, xx = np.mgrid[:H, :W]
    disc = ((yy - 20) ** 2 + (xx - 32) ** 2 <= 8**2).astype(np.uint16) * 7
    images = disc[None, ..., None].astype(np.float32)
    _, moved = apply_geometric(images, disc[None], GeometricParams(translate=(0.25, 0.0)))
    assert np.array_equal(moved[0], np.roll(disc, 16, axis=1))
    _, flipped = apply_geometric(images, disc[None], GeometricParams(hflip=True, vflip=True))
    assert np.array_equal(flipped[0], disc[::-1, ::-1])
    _, turned = apply_geometric(images, disc[None], GeometricParams(angle_deg=10.0))
    rows, cols = np.nonzero(turned[0] == 7)
    # A rotated disc stays a disc (a shear on the non-square grid would stretch it).
    assert abs(len(rows) - (disc > 0).sum()) <= 4
    assert rows.max() - rows.min() == cols.max() - cols.min() == 16


def test_same_seed_and_epoch_reproduce_the_clip(data_dir: Path) -> None:
    options = {"num_frames": 3, "resolution": S, "max_num_objects": 2, "max_num_bkgd_objects": 4}
    a = CTCClipDataset(data_dir, "train", seed=3, **options)
    b = CTCClipDataset(data_dir, "train", seed=3, **options)
    for ds in (a, b):
        ds.set_epoch(2)
    x, y = a[1], b[1]
    for name in ("pixel_values", "targets", "object_ids", "is_background", "prompt_frame"):
        assert torch.equal(getattr(x, name), getattr(y, name))
    a.set_epoch(3)
    assert not torch.equal(a[1].pixel_values, x.pixel_values)
    fixed = CTCClipDataset(data_dir, "train", augment=False, seed=3, **options)
    first = fixed[1]
    fixed.set_epoch(5)
    assert torch.equal(fixed[1].pixel_values, first.pixel_values)
    assert torch.equal(fixed[1].object_ids, first.object_ids)


def test_plain_ctc_root_and_config(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write_sequence(root, "01", 5)
    cfg = load_config(
        [
            f"dataset.data_dir={root}",
            "scratch.num_frames=2",
            f"scratch.resolution={S}",
            "scratch.augment=false",
            f"launcher.experiment_log_dir={tmp_path / 'log'}",
        ]
    )
    for config in (cfg, to_dataclass(cfg)):
        ds = CTCClipDataset.from_config(config)
        assert len(ds) == 4
        assert ds[0].pixel_values.shape == (2, 3, S, S)
    assert available_splits(root) == ["train"]
    with pytest.raises(CTCFormatError, match="split 'val' not found"):
        CTCClipDataset.from_config(cfg, cfg.dataset.val_split)


def test_from_arrays_several_sequences(data_dir: Path) -> None:
    seqs = [make_sequence(6), make_sequence(3)]
    ds = CTCClipDataset.from_arrays(
        [s[0] for s in seqs], [s[1] for s in seqs], [s[2] for s in seqs], num_frames=3, **plain()
    )
    assert len(ds) == 4 + 1
    on_disk = CTCClipDataset(data_dir, "train", num_frames=3, **plain())
    assert torch.equal(ds[1].targets, on_disk[1].targets)
    lazy_images = open_sequence(data_dir / "train" / "CTC" / "01").images  # read per clip
    lazy = CTCClipDataset.from_arrays(lazy_images, *seqs[0][1:], num_frames=3, **plain())
    assert torch.equal(lazy[1].pixel_values, on_disk[1].pixel_values)
    images, labels, lineage = seqs[0]
    labels = labels.copy()
    labels[0, 0, 0] = 9  # a label the lineage does not know
    with pytest.raises(CTCFormatError, match="label 9"):
        CTCClipDataset.from_arrays(images, labels, lineage)
    with pytest.raises(ValueError, match="do not match images"):
        CTCClipDataset.from_arrays(images[:, :10], seqs[0][1])


def test_clear_errors_before_training(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CTCFormatError, match="missing"):
        CTCClipDataset(tmp_path / "nowhere", "train")
    with pytest.raises(CTCFormatError, match="split 'test' is missing"):
        CTCClipDataset(data_dir, "test")
    (data_dir / "test" / "CTC").mkdir(parents=True)
    with pytest.raises(CTCFormatError, match="split 'test' has no sequences"):
        CTCClipDataset(data_dir, "test")
    with pytest.raises(ValueError, match="num_frames=7 is longer than every sequence"):
        CTCClipDataset(data_dir, "train", num_frames=7)
    no_gt = tmp_path / "no_gt"
    write_images(no_gt / "01", make_sequence(3)[0])
    with pytest.raises(CTCFormatError, match="no TRA data") as info:
        CTCClipDataset(no_gt, "train")
    assert info.value.path == no_gt / "01_GT"
    bad = data_dir / "train" / "CTC" / "02" / "t002.tif"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(CTCFormatError, match=r"t002\.tif"):
        CTCClipDataset(data_dir, "train")
    lazy = CTCClipDataset(data_dir, "train", num_frames=3, check=False, **plain())
    lazy[0]  # sequence 01 reads fine; the broken frame surfaces when read
    with pytest.raises(CTCFormatError, match=r"t002\.tif"):
        lazy[4]
    with pytest.raises(ValueError, match="max_num_objects"):
        CTCClipDataset(data_dir, "val", max_num_objects=0)


def test_gamma_jitter_never_makes_nan_from_resampling_undershoot():
    import numpy as np

    from napari_cellsam2.training.augment import IntensityParams, apply_intensity

    clip = np.full((1, 4, 4, 1), -1e-6, np.float32)  # bilinear resampling can dip below 0
    out = apply_intensity(clip, IntensityParams(1.0, 0.0, 0.8, 0.0, 0.0), np.random.default_rng(0))
    assert np.isfinite(out).all() and out.min() >= 0.0


def test_a_movie_holds_out_its_last_frames_for_validation() -> None:
    from napari_cellsam2.training.data import movie_datasets

    images, labels, _ = make_sequence(20)
    cfg = load_config(["launcher.experiment_log_dir=unused", "scratch.num_frames=2"])
    scratch = to_dataclass(cfg).scratch
    train, val = movie_datasets(images, labels, {4: 3, 5: 3}, scratch, holdout=0.15)
    assert len(train) == 17 - 1 and len(val) == 3 - 1  # frames 0-16 and 17-19, 2-frame clips
    assert train.options.augment == scratch.augment and not val.options.augment
    assert movie_datasets(images, labels, None, scratch, holdout=0)[1] is None
    assert movie_datasets(images[:3], labels[:3], None, scratch, holdout=0.5)[1] is None


def test_no_annotated_cell_is_refused_before_training(tmp_path: Path, capsys) -> None:
    """An all-zero labels layer (or GT) must not "fine-tune" on nothing: the data module refuses
    it before anything is written, saying what it found and what is needed (issue 11)."""
    from napari_cellsam2.cli import main
    from napari_cellsam2.training.data import movie_datasets

    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32)).astype(np.uint8)
    empty = np.zeros((6, 32, 32), np.uint16)
    scratch = to_dataclass(load_config(["launcher.experiment_log_dir=x"])).scratch
    with pytest.raises(ValueError, match=r"0 annotated cells on 0 of \d+ frames.*at least 1"):
        movie_datasets(images, empty, None, scratch)
    # the CLI: one line, exit 2, no run folder
    write_images(tmp_path / "data" / "train" / "CTC" / "01", images)
    write_gt(tmp_path / "data" / "train" / "CTC" / "01_GT", empty, Lineage.from_labels(empty))
    log = tmp_path / "run"
    code = main(
        [
            "train",
            f"launcher.experiment_log_dir={log}",
            "model.base=tiny",
            f"dataset.data_dir={tmp_path / 'data'}",
            "dataset.val_split=train",
            "model.device=cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and not log.exists(), err
    assert "0 annotated cells on 0 of 6 frames" in err and len(err.strip().splitlines()) == 1
