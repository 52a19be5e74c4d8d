"""Tracking inputs and building blocks: bad input leaves the session usable, lazy frames, prompt
files, overlap and division rules, gap splitting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_cellsam2.ctc import Lineage, open_path, write_images
from napari_cellsam2.model.preprocess import Letterbox
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from napari_cellsam2.tracking import (
    BoxPrompt,
    MaskPrompt,
    PointPrompt,
    TrackingSession,
    build_result,
    compose_frame,
    resolve_overlaps,
    split_parts,
)
from napari_cellsam2.tracking.division_config import DivisionConfig
from napari_cellsam2.tracking.prompt_file import PromptFileError, read_prompt_file
from napari_cellsam2.tracking.prompts import FramePrompt, point_inputs
from napari_cellsam2.tracking.run import apply_prompt_entries

T, H, W = 6, 40, 56


@pytest.fixture(scope="module")
def model():
    return build_random_model(tiny_config(64))


def make_frames(n: int = T) -> np.ndarray:
    rng = np.random.default_rng(1)
    frames = rng.normal(100, 5, (n, H, W))
    frames[:, 10:20, 10:20] += 300
    return frames.astype(np.uint16)


@pytest.fixture
def session(model) -> TrackingSession:
    s = TrackingSession(model, make_frames())
    s.add_points(1, 0, [[14, 14]])
    return s


BLOB = np.zeros((H, W), bool)
BLOB[10:20, 10:20] = True
TWO = [PointPrompt([[12, 12]]), PointPrompt([[18, 18]])]

BAD_CALLS = {
    "point right of the image": (lambda s: s.add_points(1, 0, [[W - 0.4, 5]]), "outside the image"),
    "point above the image": (lambda s: s.add_points(1, 0, [[5, -0.6]]), "outside the image"),
    "NaN point": (lambda s: s.add_points(1, 0, [[np.nan, 3]]), "NaN"),
    "points not (N, 2)": (lambda s: s.add_points(1, 0, [1, 2, 3]), r"\(N, 2\)"),
    "no points": (lambda s: s.add_points(1, 0, np.zeros((0, 2))), "non-empty"),
    "label count": (lambda s: s.add_points(1, 0, [[1, 1], [2, 2]], [1]), "2 points but 1 labels"),
    "label value": (lambda s: s.add_points(1, 0, [[1, 1]], [2]), r"1 \(cell\) or 0"),
    "empty box": (lambda s: s.add_box(1, 0, [5, 5, 5, 9]), "empty"),
    "box outside": (lambda s: s.add_box(1, 0, [5, 5, 70, 9]), "outside the image"),
    "box of 3 numbers": (lambda s: s.add_box(1, 0, [1, 2, 3]), "4 numbers"),
    "empty mask": (lambda s: s.add_mask(1, 0, np.zeros((H, W), bool)), "empty"),
    "mask shape": (lambda s: s.add_mask(1, 0, np.ones((10, 10), bool)), "shape"),
    "mask of strings": (lambda s: s.add_mask(1, 0, np.full((H, W), "a")), "boolean or numeric"),
    "frame past the end": (lambda s: s.add_points(1, T, [[1, 1]]), "out of range"),
    "negative frame": (lambda s: s.add_points(1, -1, [[1, 1]]), "out of range"),
    "fractional frame": (lambda s: s.add_points(1, 1.5, [[1, 1]]), "integer frame"),
    "object id 0": (lambda s: s.add_points(0, 0, [[1, 1]]), "1..65535"),
    "object id too large": (lambda s: s.add_points(70000, 0, [[1, 1]]), "1..65535"),
    "object id not a number": (lambda s: s.add_points("a", 0, [[1, 1]]), "integer"),
    "remove unknown object": (lambda s: s.remove_object(99), "unknown object id 99"),
    "divide unknown object": (lambda s: s.divide(99, 3, TWO), "unknown object id 99"),
    "prompts of unknown object": (lambda s: s.remove_prompts(99, 0), "unknown object id"),
    "no prompt on that frame": (lambda s: s.remove_prompts(1, 4), "no prompt on frame 4"),
    "propagate unknown object": (lambda s: s.propagate(obj_ids=[99]), "unknown object id"),
    "propagate direction": (lambda s: s.propagate("sideways"), "direction must be"),
    "start after end": (lambda s: s.propagate("forward", start=5, end=2), "past end"),
    "end with both": (lambda s: s.propagate("both", end=3), "cannot be combined"),
    "start out of range": (lambda s: s.propagate(start=T), "out of range"),
    "one daughter": (lambda s: s.divide(1, 3, TWO[:1]), "exactly 2"),
    "divide on first frame": (lambda s: s.divide(1, 0, TWO), "cannot divide on 0"),
    "daughter outside": (lambda s: s.divide(1, 3, [TWO[0], PointPrompt([[99, 1]])]), "outside"),
    "daughter not a prompt": (lambda s: s.divide(1, 3, ["a", "b"]), "PointPrompt"),
    "seed with floats": (lambda s: s.seed_from_labels(0, np.ones((H, W))), "integers"),
    "seed without objects": (lambda s: s.seed_from_labels(0, np.zeros((H, W), int)), "no objects"),
    "seed shape": (lambda s: s.seed_from_labels(0, np.ones((3, 3), int)), "shape"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_is_refused_and_the_session_still_works(session, name):
    call, message = BAD_CALLS[name]
    before = session.labels.copy()
    with pytest.raises(ValueError, match=message):
        call(session)
    assert session.object_ids == [1] and session.prompt_frames(1) == [0]
    np.testing.assert_array_equal(session.labels, before)
    assert [r.frame for r in session.propagate()] == list(range(T))
    assert session.lineage()[1].begin == 0


def test_division_and_prompt_ranges_are_enforced(session):
    session.add_points(1, 4, [[15, 15]])
    with pytest.raises(ValueError, match=r"prompts on frame\(s\) \[4\]"):
        session.divide(1, 3, TWO)
    session.remove_prompts(1, 4)
    a, _ = session.divide(1, 3, TWO)
    with pytest.raises(ValueError, match=r"lives on frames 3\.\.5"):
        session.add_points(a, 1, [[1, 1]])
    with pytest.raises(ValueError, match=r"lives on frames 0\.\.2"):
        session.add_points(1, 4, [[1, 1]])
    with pytest.raises(ValueError, match="already divides on frame 3"):
        session.divide(1, 2, TWO)
    assert [r.frame for r in session.propagate()] == list(range(T))  # 1 on 0..2, a, b on 3..5
    assert session.lineage()[a].parent == 1


@pytest.mark.parametrize(
    ("frames", "error", "message"),
    [
        (np.zeros((T, 3, H, W), np.uint16), ValueError, "3D volume"),
        (np.zeros((H, W), np.uint16), ValueError, "dimension"),
        (np.zeros((0, H, W), np.uint16), ValueError, "empty"),
        (np.zeros((T, H, W), bool), TypeError, "dtype bool"),
        (np.zeros((T, H, W), complex), TypeError, "dtype complex"),
        (np.zeros((T, H, W), object), TypeError, "dtype object"),
    ],
)
def test_unsupported_frames_are_refused(model, frames, error, message):
    with pytest.raises(error, match=message):
        TrackingSession(model, frames)


def test_bad_session_options(model):
    frames = make_frames()
    with pytest.raises(TypeError, match="Sam2VideoModel"):
        TrackingSession("tiny", frames)
    for kw, message in [
        ({"feature_cache_frames": 0}, "feature_cache_frames"),
        ({"first_frame": -1}, "first_frame"),
        ({"precision": "bf16"}, "needs a CUDA device"),
        ({"precision": "half"}, "precision must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrackingSession(model, frames, **kw)
    for kw, message in [
        ({"split_min_fraction": 2.0}, "split_min_fraction"),
        ({"split_min_area": 0}, "split_min_area"),
        ({"div_iou_thresh": -0.1}, "div_iou_thresh"),
    ]:
        with pytest.raises(ValueError, match=message):
            DivisionConfig(**kw)
    session = TrackingSession(model, frames, precision="fp32")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        session.precision = "bf16"
    assert session.precision == "fp32"
    session.prefetch(1)
    session.precision = "auto"  # cached features had the old precision: recomputed when needed
    session.prefetch(2)
    assert 1 not in session._features and 2 in session._features
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            TrackingSession(model, frames)
    finally:
        model.eval()


def test_mask_too_small_for_the_model_resolution(model):
    s = TrackingSession(model, np.zeros((2, 256, 256), np.uint8))
    tiny = np.zeros((256, 256), bool)
    tiny[100, 100] = True
    with pytest.raises(ValueError, match="vanishes at the model resolution"):
        s.add_mask(1, 0, tiny)
    assert s.object_ids == []


def test_lazy_frames_track_like_an_array(model, tmp_path):
    frames = make_frames()
    write_images(tmp_path / "01", frames)
    lazy = open_path(tmp_path / "01").images
    results = []
    for source in (frames, lazy):
        s = TrackingSession(model, source)
        s.add_points(1, 0, [[14, 14]])
        s.add_box(2, 2, [30, 20, 50, 35])
        for _ in s.propagate("both"):
            pass
        assert s.memory_stats()["preprocessed_frames"] <= 2
        results.append(s.labels)
    np.testing.assert_array_equal(results[0], results[1])


# ---- building blocks -------------------------------------------------------------------------
def test_resolve_overlaps_highest_logit_wins():
    logits = torch.full((2, 4, 5), -1.0)
    logits[0, :, :3] = 2.0  # object 7
    logits[1, :, 2:] = 5.0  # object 3, overlaps object 7 in column 2
    logits[1, 0, 2] = 1.0  # ... except one pixel where object 7 is more confident
    out = resolve_overlaps(logits, [7, 3])
    assert out[:, :2].tolist() == [[7, 7]] * 4 and (out[1:, 2:] == 3).all()
    assert out[0, 2] == 7
    logits[:] = -3.0
    assert not resolve_overlaps(logits, [7, 3]).any()


def test_compose_keeps_untouched_objects_unless_prompted():
    old = np.array([[1, 1, 2, 2, 0]], np.uint16)
    new = np.array([[2, 0, 0, 2, 2]])  # object 2 re-predicted, wants a pixel of object 1
    out = compose_frame(old, new, computed=[2], prompted=[])
    assert out.tolist() == [[1, 1, 0, 2, 2]]
    out = compose_frame(old, new, computed=[2], prompted=[2])
    assert out.tolist() == [[2, 1, 0, 2, 2]]


def test_split_parts_needs_two_substantial_parts():
    mask = np.zeros((20, 30), bool)
    mask[2:8, 2:8] = True  # 36 px
    mask[2:7, 20:25] = True  # 25 px
    parts = split_parts(mask, min_area=20, min_fraction=0.2, reference_area=60)
    assert parts is not None and [p.sum() for p in parts] == [36, 25]
    assert split_parts(mask, min_area=30, min_fraction=0.2, reference_area=60) is None
    assert split_parts(mask, min_area=5, min_fraction=0.5, reference_area=60) is None
    diagonal = np.zeros((10, 10), bool)
    diagonal[:5, :5] = diagonal[5:, 5:] = True  # touching corners: one 8-connected cell
    assert split_parts(diagonal, 1, 0.0, 50) is None


def test_gap_split_and_parent_links_validate():
    labels = np.zeros((6, 4, 4), np.uint16)
    for t in (0, 1, 3):
        labels[t, 0, 0] = 1  # mother, lost on frame 2
    for t in (4, 5):
        labels[t, 0, 0], labels[t, 3, 3] = 2, 3
    presence = {1: [0, 1, 3], 2: [4, 5], 3: [4, 5]}
    result = build_result(labels, presence, {2: 1, 3: 1}, first_frame=10)
    assert result.segments == {1: [1, 4], 2: [2], 3: [3]}
    assert result.lineage[4].parent == 1 and result.lineage[4].begin == 13
    assert result.lineage[2].parent == result.lineage[3].parent == 4
    assert result.labels[3, 0, 0] == 4 and labels[3, 0, 0] == 1  # a relabelled copy
    result.lineage.validate(result.labels, first_frame=10)
    tail = labels[4:]
    no_gap = build_result(tail, {2: [0, 1], 3: [0, 1]}, {})
    assert no_gap.labels is tail  # no gaps: the session's array itself, no copy
    assert isinstance(no_gap.lineage, Lineage) and len(no_gap.lineage) == 2


def test_prompts_merge_and_map_to_model_coordinates():
    box = Letterbox(H, W, 64)
    fp = FramePrompt().merged(PointPrompt(np.array([[3.0, 4.0]]), np.array([1])))
    fp = fp.merged(BoxPrompt((1.0, 2.0, 20.0, 30.0))).merged(
        PointPrompt(np.array([[5.0, 6.0]]), np.array([0]))
    )
    inputs = point_inputs(fp, box, torch.device("cpu"))
    assert inputs["point_labels"].tolist() == [[[2, 3, 1, 0]]]
    expected = box.points_to_model([[1, 2], [20, 30], [3, 4], [5, 6]])
    np.testing.assert_allclose(inputs["point_coords"][0, 0].numpy(), expected, rtol=1e-6)
    masked = fp.merged(MaskPrompt(BLOB))
    assert masked.mask is not None and len(masked.points) == 0 and masked.box is None
    assert masked.merged(PointPrompt(np.array([[1.0, 1.0]]), np.array([1]))).mask is None


# ---- prompt files ----------------------------------------------------------------------------
def test_prompt_files_parse(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("object_id,frame,x,y,label\n1,0,12.5,30,1\n1,0,20,30,0\n2,3,40,18,\n")
    entries = read_prompt_file(csv_file)
    assert [(e.object_id, e.frame) for e in entries] == [(1, 0), (1, 0), (2, 3)]
    assert [e.prompt.labels for e in entries] == [[1], [0], [1]]
    json_file = tmp_path / "p.json"
    json_file.write_text(
        json.dumps(
            {"prompts": [{"object_id": 1, "frame": 0, "points": [[1, 2]], "box": [0, 0, 9, 9]}]}
        )
    )
    kinds = [type(e.prompt).__name__ for e in read_prompt_file(json_file)]
    assert kinds == ["BoxPrompt", "PointPrompt"]
    excel = tmp_path / "excel.csv"  # Excel's "CSV UTF-8" starts with a byte-order mark
    excel.write_bytes(b"\xef\xbb\xbfobject_id,frame,x,y\n1,0,12.5,30\n")
    assert [(e.object_id, e.frame) for e in read_prompt_file(excel)] == [(1, 0)]
    latin = tmp_path / "latin.csv"  # another encoding: one message naming the file
    latin.write_bytes("object_id,frame,x,y,note\n1,0,1,1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match="not UTF-8 text") as info:
        read_prompt_file(latin)
    assert str(latin) in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "id,frame,x,y\n1,0,1,1\n", "line 1: header must have.*missing object_id"),
        ("a.csv", "object_id,frame,x,y\n1,0,1,1\n2,zero,1,1\n", "line 3: frame must be an integer"),
        ("a.csv", "object_id,frame,x,y\n1,0,1\n", "line 2: expected 4 values"),
        ("a.csv", "object_id,frame,x,y\n", "no prompts"),
        ("a.json", '[{"object_id": 1,\n "frame": 0,,}]', "line 2: invalid JSON"),
        ("a.json", '[{"object_id": 1, "frame": 0, "point": [[1, 1]]}]', "entry 1: unknown key"),
        ("a.json", '[{"object_id": 1, "frame": 0}]', "entry 1: needs 'points'"),
        ("a.json", "{}", "non-empty list"),
        ("a.txt", "", "must end in .csv or .json"),
    ],
)
def test_bad_prompt_files_name_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PromptFileError, match=message) as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


def test_prompt_entries_out_of_the_image_name_the_line(session, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(f"object_id,frame,x,y\n1,0,5,5\n2,0,{W + 3},5\n")
    with pytest.raises(PromptFileError, match=r"p.csv line 3: point .* outside the image"):
        apply_prompt_entries(session, read_prompt_file(path))
    path.write_text(f"object_id,frame,x,y\n1,{T},5,5\n")
    with pytest.raises(PromptFileError, match=rf"line 2: frame {T} is not in the sequence"):
        apply_prompt_entries(session, read_prompt_file(path))


def test_peft_lora_models_track_with_their_adapters(model):
    from peft import LoraConfig, get_peft_model

    frames = make_frames()
    base = TrackingSession(model, frames)
    base.add_points(1, 0, [[14, 14]])
    base.predict_frame(0)
    lora = get_peft_model(
        build_random_model(tiny_config(64)), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    lora.eval()
    s = TrackingSession(lora, frames)
    assert s.model is lora.get_base_model()
    s.add_points(1, 0, [[14, 14]])
    s.predict_frame(0)
    assert not np.array_equal(s.labels[0], base.labels[0])  # the adapter changes the masks


def test_seed_from_labels_can_leave_out_labels_too_small_for_the_model():
    """A 1-pixel fragment (common in tracking results) is refused by default and left out with
    skip_vanishing, which the tracking-path validation uses to score a result."""
    session = TrackingSession(
        build_random_model(tiny_config(64)), np.zeros((2, 256, 32), np.uint16)
    )
    labels = np.zeros((256, 32), np.uint16)
    labels[20:60, 4:28] = 1
    labels[200, 10] = 2  # a quarter of a model pixel
    with pytest.raises(ValueError, match=r"label 2 .*vanishes"):
        session.seed_from_labels(0, labels)
    assert session.object_ids == []  # nothing half-seeded
    assert session.seed_from_labels(0, labels, skip_vanishing=True) == [1]
    assert session.object_ids == [1]
