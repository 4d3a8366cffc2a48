"""Each preprocessing step on images with a known answer, made from real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mnist_jax.errors import UserError
from mnist_jax.preprocess import (
    center_by_mass,
    crop_to_ink,
    fit_to_box,
    flatten_alpha,
    load_grayscale,
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
    np.testing.assert_allclose(to_ink(1.0 - paper), to_ink(paper), atol=1e-6)
    np.testing.assert_array_equal(to_mnist(1.0 - paper), to_mnist(paper))


def test_a_tiny_digit_in_a_big_canvas_is_found_and_scaled_to_the_20_pixel_box(digit):
    canvas = 1.0 - on_canvas(digit, (600, 800), top=400, left=650)  # dark ink on white paper
    result = to_mnist(canvas)[..., 0]
    rows = np.flatnonzero(result.max(axis=1) > 64)
    cols = np.flatnonzero(result.max(axis=0) > 64)
    assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) in (19, 20)
    assert correlation(result, to_mnist(digit)[..., 0]) > 0.95


def test_crop_and_fit_keep_the_aspect_ratio():
    bar = np.zeros((50, 50), np.float32)
    bar[10:40, 20:25] = 1.0  # 30 tall, 5 wide
    cropped = crop_to_ink(bar)
    assert cropped.shape == (30, 5)
    fitted = fit_to_box(cropped)
    assert fitted.shape == (20, 3) and fitted.max() == pytest.approx(1.0)
    placed = center_by_mass(fitted)
    assert placed.shape == (28, 28) and placed[4:24, 13:16].sum() == pytest.approx(fitted.sum())


def test_a_blank_image_has_no_ink():
    with pytest.raises(UserError, match="no ink found"):
        to_mnist(np.full((40, 40), 0.8, np.float32))


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
