"""Each preprocessing step on images with a known answer, most made from real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mnist_jax.errors import ImageTooLarge, NoInk, NotAnImage
from mnist_jax.inference.preprocess import (
    STROKE_TARGET,
    center_by_mass,
    crop_to_mask,
    estimate_background,
    fit_to_box,
    flatten_alpha,
    ink_mask,
    load_grayscale,
    noise_sigma,
    normalise_strokes,
    otsu_threshold,
    remove_specks,
    stroke_width,
    to_ink,
    to_mnist,
)


@pytest.fixture(scope="module")
def digit(mnist) -> np.ndarray:
    """The first test digit (a 7) as float32 (28, 28), white ink on black."""
    return mnist.test_images[0, :, :, 0].astype(np.float32) / 255


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def on_canvas(ink: np.ndarray, shape, top: int, left: int, scale: int = 1) -> np.ndarray:
    """Returns ink upscaled by `scale` and pasted into a black canvas of `shape` at (top, left)."""
    big = np.kron(ink, np.ones((scale, scale), np.float32))
    canvas = np.zeros(shape, np.float32)
    canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    return canvas


def gradient_light(shape) -> np.ndarray:
    """Light falling from 1.0 at the left edge to 0.45 at the right, with a vignette."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return (1.0 - 0.275 * (x + 1) - 0.1 * (x * x + y * y) / 2).astype(np.float32)


def test_an_mnist_digit_comes_back_almost_unchanged(digit):
    assert correlation(to_mnist(digit)[..., 0] / 255, digit) > 0.95


def test_a_digit_moved_off_centre_comes_back_centred(digit):
    moved = on_canvas(digit, (60, 60), top=0, left=30)
    result = to_mnist(moved)[..., 0].astype(np.float64)
    com_y, com_x = ndimage.center_of_mass(result)
    assert abs(com_y - 14) <= 0.5 and abs(com_x - 14) <= 0.5  # where MNIST puts it
    assert correlation(result, to_mnist(digit)[..., 0]) > 0.95


def test_an_inverted_image_is_inverted_back(digit):
    paper = on_canvas(digit, (120, 100), top=20, left=10, scale=3)
    np.testing.assert_allclose(to_ink(1.0 - paper), to_ink(paper), atol=1e-5)
    np.testing.assert_array_equal(to_mnist(1.0 - paper), to_mnist(paper))


def test_a_tiny_digit_in_a_big_canvas_is_found_and_scaled_to_the_20_pixel_box(digit):
    canvas = 1.0 - on_canvas(digit, (600, 800), top=400, left=650)  # dark ink on white paper
    result = to_mnist(canvas)[..., 0]
    rows = np.flatnonzero(result.max(axis=1) > 64)
    cols = np.flatnonzero(result.max(axis=0) > 64)
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) in (19, 20)
    assert correlation(result, to_mnist(digit)[..., 0]) > 0.95


def test_the_background_under_uneven_light_is_the_lit_paper(digit):
    light = gradient_light((150, 200))
    page = (0.9 - 0.8 * on_canvas(digit, (150, 200), top=30, left=60, scale=3)) * light
    paper = on_canvas(digit, (150, 200), top=30, left=60, scale=3) == 0
    np.testing.assert_allclose(estimate_background(page)[paper], (0.9 * light)[paper], atol=0.02)


def test_uneven_light_and_noise_leave_the_same_ink_as_clean_paper(digit):
    ink = on_canvas(digit, (150, 200), top=30, left=60, scale=3)
    clean = to_ink(0.9 - 0.8 * ink)
    noisy = (0.9 - 0.8 * ink) * gradient_light(ink.shape) + np.random.default_rng(0).normal(0, 0.03, ink.shape)
    dark_side = to_ink(noisy.astype(np.float32))
    assert correlation(dark_side, clean) > 0.95
    assert np.percentile(dark_side[ink == 0], 99) < 0.15  # the paper, lit or shaded, is not ink
    np.testing.assert_array_equal(ink_mask(dark_side)[ink == 1], True)


def test_a_digit_filling_the_frame_keeps_its_polarity(digit):
    rows, cols = np.flatnonzero(digit.max(axis=1) > 0), np.flatnonzero(digit.max(axis=0) > 0)
    tight = np.kron(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], np.ones((5, 5), np.float32))
    assert correlation(to_ink(0.95 - 0.9 * tight), tight) > 0.95


def test_noise_sigma_ignores_ink_and_light(digit):
    ink = on_canvas(digit, (150, 200), top=30, left=60, scale=3)
    page = (0.9 - 0.8 * ink) * gradient_light(ink.shape) + np.random.default_rng(1).normal(0, 0.05, ink.shape)
    assert noise_sigma(page) == pytest.approx(0.05, rel=0.15)


def test_otsu_splits_two_classes_halfway():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(0.3, 0.05, 5000), rng.normal(0.7, 0.05, 5000)])
    assert otsu_threshold(np.clip(values, 0, 1)) == pytest.approx(0.5, abs=0.02)


def test_specks_go_and_stroke_fragments_stay():
    mask = np.zeros((100, 100), bool)
    mask[10:90, 40:45] = True  # the digit's main stroke: 80 tall
    mask[10:14, 50:75] = True  # a detached fragment: 25 long, thin
    strokes = mask.copy()
    mask[60:62, 80:82] = mask[95, 5] = True  # dust
    np.testing.assert_array_equal(remove_specks(mask), strokes)


def test_stroke_width_of_bars_of_known_width():
    for width in (5, 8, 15):
        mask = np.zeros((200, 200), bool)
        mask[20:180, 50 : 50 + width] = True
        assert stroke_width(mask) == pytest.approx(width, rel=0.05)


def test_a_fine_pen_is_widened_to_mnist_strokes_and_a_normal_one_is_left_alone():
    thin = np.zeros((80, 80), np.float32)
    thin[10:70, 40:42] = 1.0  # 2 px at 4x detail: 0.5 px in the 20-px box
    widened = normalise_strokes(thin)
    assert stroke_width(widened > 0.5) / 4 == pytest.approx(STROKE_TARGET, rel=0.2)
    normal = np.zeros((80, 80), np.float32)
    normal[10:70, 36:45] = 1.0  # 9 px: 2.25 px in the box
    assert normalise_strokes(normal) is normal


def test_crop_and_fit_keep_the_aspect_ratio():
    bar = np.zeros((50, 50), np.float32)
    bar[10:40, 20:25] = 1.0  # 30 tall, 5 wide
    cropped = crop_to_mask(bar, bar > 0.5, margin=0)
    assert cropped.shape == (30, 5)
    fitted = fit_to_box(cropped)
    assert fitted.shape == (20, 3) and fitted.max() == pytest.approx(1.0)
    placed = center_by_mass(fitted)
    assert placed.shape == (28, 28) and placed[4:24, 13:16].sum() == pytest.approx(fitted.sum())


@pytest.mark.parametrize("shade", [0.8, 0.2])
def test_a_blank_image_has_no_ink(shade):
    noisy = shade + np.random.default_rng(3).normal(0, 0.03, (60, 80)).astype(np.float32)
    with pytest.raises(NoInk, match="no ink found"):
        to_mnist(noisy)


@pytest.mark.parametrize("shape", [(1, 1), (1, 60), (60, 1), (2, 2), (3, 40)])
def test_slivers_of_images_give_a_digit_or_no_ink_never_a_crash(shape):
    sliver = np.full(shape, 0.9, np.float32)
    sliver[0, 0] = 0.1
    try:
        assert to_mnist(sliver).shape == (28, 28, 1)
    except NoInk as error:
        assert "no ink found" in str(error)


@pytest.mark.parametrize("ink_shade, background", [(0.0, 1.0), (1.0, 0.0)])
def test_transparent_drawings_are_flattened_onto_a_contrasting_background(ink_shade, background):
    rgba = np.zeros((10, 10, 4), np.float32)
    rgba[4:6, 2:8] = [ink_shade, ink_shade, ink_shade, 1.0]
    gray = flatten_alpha(rgba)
    assert gray[0, 0] == pytest.approx(background) and gray[5, 5] == pytest.approx(ink_shade)


def test_exif_orientation_is_applied(tmp_path, digit):
    image = Image.fromarray(np.uint8(255 - 255 * on_canvas(digit, (40, 60), top=5, left=5)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    image.save(tmp_path / "sideways.jpg", exif=exif)
    assert load_grayscale(tmp_path / "sideways.jpg").shape == (60, 40)


@pytest.mark.parametrize("suffix", ["png", "jpg", "bmp", "gif", "tiff", "webp"])
def test_every_supported_format_reads_the_same_digit(tmp_path, digit, suffix):
    page = Image.fromarray(np.uint8(230 - 200 * on_canvas(digit, (100, 90), top=10, left=5, scale=3)))
    page.save(tmp_path / f"digit.{suffix}")
    assert correlation(to_mnist(load_grayscale(tmp_path / f"digit.{suffix}")), to_mnist(digit)) > 0.95


def test_a_16_bit_scan_reads_like_an_8_bit_one(tmp_path, digit):
    page = 0.9 - 0.8 * on_canvas(digit, (100, 90), top=10, left=5, scale=3)
    Image.fromarray(np.round(page * 65535).astype(np.uint16)).save(tmp_path / "scan16.png")
    Image.fromarray(np.round(page * 255).astype(np.uint8)).save(tmp_path / "scan8.png")
    assert Image.open(tmp_path / "scan16.png").mode == "I;16"
    np.testing.assert_allclose(load_grayscale(tmp_path / "scan16.png"), load_grayscale(tmp_path / "scan8.png"),
                               atol=1 / 255)


def test_big_images_are_read_at_the_working_size_and_still_found(tmp_path, digit):
    page = Image.fromarray(np.uint8(240 - 220 * on_canvas(digit, (2400, 3200), top=900, left=1300, scale=20)))
    page.save(tmp_path / "photo.jpg", quality=90)
    gray = load_grayscale(tmp_path / "photo.jpg", max_side=1024)
    assert max(gray.shape) <= 1024 and gray.shape[1] > gray.shape[0]
    assert correlation(to_mnist(gray), to_mnist(digit)) > 0.9


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"), (b"plain text, not a picture", "not an image"),
])
def test_files_that_are_not_images_are_named_with_the_reason(tmp_path, content, reason):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(NotAnImage, match=f"^{tmp_path / 'x.png'}: {reason}"):
        load_grayscale(tmp_path / "x.png")


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    Image.new("L", (300, 200), 255).save(tmp_path / "big.png")
    with pytest.raises(ImageTooLarge, match="300x200 pixels is larger than the 50,000-pixel limit"):
        load_grayscale(tmp_path / "big.png", max_pixels=50_000)
