"""Letterbox geometry and frame preprocessing: exact round trips, registration, input handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_cellsam2.model.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntensityNorm,
    Letterbox,
    preprocess_frame,
    preprocess_frames,
)


def random_blobs(h: int, w: int, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """Union of random ellipses, with 1-pixel spurs removed (cell-like masks)."""
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), bool)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(3, max(4, h / 4)), rng.uniform(3, max(4, w / 4))
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return ndi.binary_opening(mask, np.ones((2, 2)))


def round_trip(box: Letterbox, mask: np.ndarray) -> np.ndarray:
    logits = 2 * box.mask_to_model(mask) - 1
    return (box.logits_to_original(logits) > 0).numpy()


@pytest.mark.parametrize(
    ("h", "w", "size"),
    [(300, 40, 1024), (37, 211, 1024), (100, 100, 256), (128, 128, 256), (60, 300, 640)],
)
def test_mask_round_trip_exact_for_any_mask_when_canvas_at_least_twice_frame(h, w, size):
    rng = np.random.default_rng(h * w)
    box = Letterbox(h, w, size)
    assert min(box.scale_xy) >= 2
    # Salt-and-pepper masks: single isolated pixels and 1-pixel gaps must all survive.
    for density in (0.05, 0.5, 0.95):
        mask = rng.random((h, w)) < density
        np.testing.assert_array_equal(round_trip(box, mask), mask)


@pytest.mark.parametrize(
    ("h", "w", "size"), [(37, 211, 256), (200, 150, 256), (256, 100, 256), (256, 256, 256)]
)
def test_mask_round_trip_exact_for_cell_masks_when_not_downsampling(h, w, size):
    rng = np.random.default_rng(7)
    box = Letterbox(h, w, size)
    for _ in range(10):
        mask = random_blobs(h, w, rng)
        np.testing.assert_array_equal(round_trip(box, mask), mask)


@pytest.mark.parametrize(("h", "w", "size"), [(300, 40, 256), (500, 500, 256)])
def test_mask_round_trip_when_downsampling_only_moves_boundary_pixels(h, w, size):
    rng = np.random.default_rng(3)
    box = Letterbox(h, w, size)
    for _ in range(5):
        mask = random_blobs(h, w, rng)
        back = round_trip(box, mask)
        wrong = back != mask
        boundary = ndi.binary_dilation(mask) & ~ndi.binary_erosion(mask)
        assert not (wrong & ~ndi.binary_dilation(boundary)).any()
        assert (back & mask).sum() / (back | mask).sum() > 0.97


def test_letterbox_geometry_tall_frame_is_top_left_anchored():
    box = Letterbox(300, 40, 256)
    assert box.scale == pytest.approx(256 / 300)
    assert box.resized_hw == (256, 34)
    canvas = box.image_to_model(np.ones((300, 40), np.float32))
    assert canvas.shape == (1, 256, 256)
    assert torch.all(canvas[:, :, :34] > 0.99)
    assert torch.all(canvas[:, :, 34:] == 0)


@pytest.mark.parametrize(("h", "w", "size"), [(300, 40, 1024), (37, 211, 256), (90, 90, 256)])
def test_points_register_with_image_content(h, w, size):
    """A bright spot at pixel (x, y) lands on the canvas exactly where points_to_model puts it."""
    box = Letterbox(h, w, size)
    x, y = 0.3 * w, 0.6 * h
    yy, xx = np.mgrid[:h, :w]
    spot = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2)).astype(np.float32)
    canvas = box.image_to_model(spot)[0].numpy().astype(np.float64)
    cy, cx = ndi.center_of_mass(canvas)
    ((px, py),) = box.points_to_model([[x, y]])
    assert abs(cx - px) < 0.05 * box.scale + 0.02
    assert abs(cy - py) < 0.05 * box.scale + 0.02


def test_points_inverse_and_box_order():
    box = Letterbox(37, 211, 256)
    pts = np.array([[0.0, 0.0], [210.0, 36.0], [17.5, 3.25]])
    np.testing.assert_allclose(box.points_to_original(box.points_to_model(pts)), pts, atol=1e-9)
    corners = box.box_to_model(2, 3, 50, 30)
    np.testing.assert_allclose(corners, box.points_to_model([[2, 3], [50, 30]]).reshape(4))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        box.points_to_model([1.0, 2.0, 3.0])


@pytest.mark.parametrize(("h", "w", "size"), [(300, 40, 256), (37, 211, 256), (64, 64, 256)])
def test_point_at_blob_centre_is_inside_model_mask_and_output(h, w, size):
    rng = np.random.default_rng(11)
    box = Letterbox(h, w, size)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(5):
        cy, cx = rng.uniform(5, h - 5), rng.uniform(3, w - 3)
        blob = ((yy - cy) / 4) ** 2 + ((xx - cx) / 2.5) ** 2 <= 1
        ((px, py),) = box.points_to_model([[cx, cy]])
        model_mask = box.mask_to_model(blob)
        assert model_mask[round(py), round(px)] > 0.5
        assert blob[round(cy), round(cx)]


def test_logits_to_original_accepts_low_res_and_batch_dims():
    box = Letterbox(300, 40, 256)
    canvas = torch.zeros(256, 256)
    canvas[:128, :] = 1.0  # top half of the canvas -> top 150 rows of the frame
    low = torch.nn.functional.interpolate(canvas[None, None], size=(64, 64), mode="area")
    logits = (2 * low - 1).expand(2, 3, 64, 64)
    out = box.logits_to_original(logits)
    assert out.shape == (2, 3, 300, 40)
    mask = (out[1, 2] > 0).numpy()
    assert mask[:148].all() and not mask[152:].any()
    half = box.logits_to_original(logits.to(torch.bfloat16))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, out, atol=2e-2, rtol=0)


def test_image_to_model_rgb_channels_and_bad_shape():
    box = Letterbox(20, 10, 64)
    rgb = np.zeros((20, 10, 3), np.float32)
    rgb[..., 1] = 1.0
    canvas = box.image_to_model(rgb)
    assert canvas.shape == (3, 64, 64)
    assert canvas[1, :64, :32].min() > 0.99 and canvas[0].abs().max() == 0
    with pytest.raises(ValueError, match=r"expected \(20, 10"):
        box.image_to_model(np.zeros((10, 20), np.float32))
    with pytest.raises(ValueError, match="positive integer"):
        Letterbox(0, 10, 64)


# --- intensity normalisation ---------------------------------------------------------------


def test_percentile_norm_ignores_hot_pixels_and_clips():
    frame = np.full((50, 50), 1000, np.uint16)
    frame[10:20, 10:20] = 3000
    frame[0, 0] = 65535  # a hot pixel must not squash the cells to near zero
    out = IntensityNorm().apply(frame)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert out[15, 15] == 1.0 and out[40, 40] == 0.0
    mm = IntensityNorm("minmax").apply(frame)
    assert mm[15, 15] == pytest.approx(2000 / 64535, rel=1e-5)


def test_norm_constant_frames_and_dtype_mode():
    for mode in ("percentile", "minmax"):
        out = IntensityNorm(mode).apply(np.full((8, 8), 42, np.uint16))
        assert np.all(out == 0) and np.isfinite(out).all()
    assert IntensityNorm("dtype").apply(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    out16 = IntensityNorm("dtype").apply(np.array([[0, 65535, 32768]], np.uint16))
    np.testing.assert_allclose(out16, [[0, 1, 32768 / 65535]], rtol=1e-6)
    outf = IntensityNorm("dtype").apply(np.array([[-0.5, 0.25, 2.0, np.nan]], np.float32))
    np.testing.assert_allclose(outf, [[0, 0.25, 1, 0]])


def test_sparse_bright_frame_falls_back_to_minmax():
    frame = np.zeros((100, 100), np.uint16)
    frame[5, 5] = 500  # fewer bright pixels than the 0.2 % above the high percentile
    out = IntensityNorm().apply(frame)
    assert out[5, 5] == 1.0 and out.sum() == 1.0


def test_intensity_norm_validates_arguments():
    with pytest.raises(ValueError, match="mode"):
        IntensityNorm("zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="low < high"):
        IntensityNorm(low=50, high=10)


# --- preprocess_frame(s) --------------------------------------------------------------------


def test_preprocess_dtypes_agree_and_are_imagenet_normalised():
    rng = np.random.default_rng(0)
    base = rng.random((40, 30))
    variants = {
        "uint8": (base * 255).round().astype(np.uint8),
        "uint16": (base * 255).round().astype(np.uint16) * 257,
        "float32": ((base * 255).round() / 255).astype(np.float32),
    }
    outs = {}
    for name, frame in variants.items():
        x, box = preprocess_frame(frame, 64, IntensityNorm("dtype"))
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32, name
        assert box == Letterbox(40, 30, 64)
        outs[name] = x
    torch.testing.assert_close(outs["uint8"], outs["uint16"], atol=1e-5, rtol=0)
    torch.testing.assert_close(outs["uint8"], outs["float32"], atol=1e-5, rtol=0)
    # grey replicated to 3 channels, ImageNet-normalised; padding is 0 (the mean colour)
    x = outs["uint8"]
    raw = x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(raw[0, :64, :48], raw[2, :64, :48], atol=1e-5, rtol=0)
    assert x[:, :, 48:].abs().max() == 0


def test_preprocess_rgb_keeps_colour():
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[..., 0] = 255
    frame[0, 0] = [0, 0, 255]
    x, _ = preprocess_frame(frame, 64, IntensityNorm("dtype"))
    raw = x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert raw[0, 32, 32] == pytest.approx(1.0, abs=1e-5)
    assert raw[1, 32, 32] == pytest.approx(0.0, abs=1e-5)


class LazyStack:
    """Minimal lazy array: shape/dtype and per-frame reads, counting them."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list[int] = []

    def __getitem__(self, t: int) -> np.ndarray:
        self.reads.append(t)
        return self._data[t]


def test_preprocess_frames_matches_per_frame_and_reads_lazily():
    rng = np.random.default_rng(1)
    stack = (rng.random((3, 30, 12)) * 4000).astype(np.uint16)
    lazy = LazyStack(stack)
    video, box = preprocess_frames(lazy, 64)
    assert video.shape == (3, 3, 64, 64) and box == Letterbox(30, 12, 64)
    assert lazy.reads == [0, 1, 2]
    for t in range(3):
        torch.testing.assert_close(video[t], preprocess_frame(stack[t], 64)[0], atol=0, rtol=0)


def test_preprocess_is_deterministic():
    frame = (np.random.default_rng(2).random((77, 33)) * 1000).astype(np.float64)
    a, _ = preprocess_frame(frame, 128)
    b, _ = preprocess_frame(frame.copy(), 128)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("frame", "error", "pattern"),
    [
        (np.zeros((4, 8, 8), np.uint8), ValueError, r"\(4, 8, 8\).*3D volume"),
        (np.zeros((2, 2, 8, 8), np.uint8), ValueError, "4 dimensions"),
        (np.zeros(8, np.uint8), ValueError, "1 dimensions"),
        (np.zeros((8, 8), bool), TypeError, "dtype bool"),
        (np.zeros((8, 8), np.complex64), TypeError, "dtype complex64"),
        (np.zeros((8, 8), object), TypeError, "dtype object"),
    ],
)
def test_preprocess_frame_rejects_bad_input(frame, error, pattern):
    with pytest.raises(error, match=pattern):
        preprocess_frame(frame, 64)


@pytest.mark.parametrize(
    ("frames", "error", "pattern"),
    [
        (np.zeros((3, 4, 8, 8), np.uint16), ValueError, r"\(3, 4, 8, 8\).*3D volume"),
        (np.zeros((8, 8), np.uint16), ValueError, "2 dimensions"),
        (np.zeros((0, 8, 8), np.uint16), ValueError, "empty"),
        (np.zeros((2, 8, 8), bool), TypeError, "frames has unsupported dtype bool"),
    ],
)
def test_preprocess_frames_rejects_bad_input(frames, error, pattern):
    with pytest.raises(error, match=pattern):
        preprocess_frames(frames, 64)
