"""Preprocessing of inputs that fooled it once: ink reaching the border, no noise, two grey levels,
coarse enlarged scans, markers, form cells, a page photographed with the desk showing. Small synthetic
images with a known answer, no MNIST."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from mnist_jax.inference.preprocess import (
    STROKE_THICK_TARGET,
    digit_ink,
    ink_mask,
    normalise_strokes,
    rectangularity,
    restore_resolution,
    ruled_lines,
    sheet_mask,
    stroke_width,
    to_ink,
    to_mnist,
    upscale_factor,
)


def drawn(shape, draw, supersample: int = 4) -> np.ndarray:
    """Coverage (H, W) in [0, 1] of what `draw(ImageDraw, scale)` paints, anti-aliased by supersampling."""
    image = Image.new("L", (shape[1] * supersample, shape[0] * supersample), 0)
    draw(ImageDraw.Draw(image), supersample)
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BOX), np.float32) / 255


def ring(shape, width: float) -> np.ndarray:
    """A 0: an ellipse of stroke `width` whose outer edge touches all four borders of `shape`."""
    return drawn(shape, lambda d, s: d.ellipse([0, 0, shape[1] * s - 1, shape[0] * s - 1], outline=255,
                                               width=round(width * s)))


def seven(shape, width: float, offset=(0, 0)) -> np.ndarray:
    """A 7: a bar and a diagonal stroke, in the middle of `shape` (shifted by `offset` (rows, cols))."""
    height, side = shape
    top, left = height * 0.2 + offset[0], side * 0.25 + offset[1]
    points = [(left, top), (left + side * 0.5, top), (left + side * 0.2, top + height * 0.6)]
    return drawn(shape, lambda d, s: d.line([(x * s, y * s) for x, y in points], fill=255, width=round(width * s),
                                            joint="curve"))


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


@pytest.mark.parametrize("dark_ink", [True, False])
def test_a_thick_0_touching_all_four_borders_keeps_its_polarity(dark_ink):
    zero = ring((90, 70), width=18)
    gray = 0.95 - 0.9 * zero if dark_ink else 0.05 + 0.9 * zero  # clean, flat, noise-free
    ink = to_ink(gray)
    assert correlation(ink, zero) > 0.95  # the ring itself, not its hole or the corners
    assert ink[45, 35] == 0.0  # the hole is paper
    hole = to_mnist(gray)[14, 14, 0]
    assert hole < 64


@pytest.mark.parametrize("dark_ink", [True, False])
def test_a_two_level_digit_touching_two_borders_keeps_its_polarity(dark_ink):
    zero = ring((60, 50), width=12)[4:, 3:] > 0.5  # cropped: the ink leaves by the top and the left
    gray = np.where(zero, 0.0, 1.0) if dark_ink else np.where(zero, 1.0, 0.0)
    assert correlation(to_ink(gray.astype(np.float32)), zero) > 0.95


def test_an_8x8_digit_enlarged_8_times_is_one_smooth_shape():
    zero = np.array([[0, 0, 1, 1, 1, 1, 0, 0],
                     [0, 1, 1, 0, 0, 1, 1, 0],
                     [0, 1, 0, 0, 0, 0, 1, 0],
                     [1, 1, 0, 0, 0, 0, 1, 1],
                     [1, 1, 0, 0, 0, 0, 1, 1],
                     [0, 1, 0, 0, 0, 0, 1, 0],
                     [0, 1, 1, 0, 0, 1, 1, 0],
                     [0, 0, 1, 1, 1, 1, 0, 0]], np.float32)
    small = Image.fromarray(np.uint8(255 - 230 * zero))
    for filtering in (Image.Resampling.NEAREST, Image.Resampling.BILINEAR):
        gray = np.asarray(small.resize((64, 64), filtering), np.float32) / 255
        assert upscale_factor(gray) == pytest.approx(8, abs=1)
        _, mask = digit_ink(gray)
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1
        assert not mask[32, 32]  # and its hole stays open
        smooth = restore_resolution(gray)
        assert np.abs(np.diff(smooth, axis=1)).max() < np.abs(np.diff(gray, axis=1)).max()


def test_images_at_their_own_resolution_are_left_alone():
    page = 0.9 - 0.8 * seven((120, 100), width=7)  # anti-aliased, flat paper, no noise
    assert upscale_factor(page) == 1.0
    assert restore_resolution(page) is page
    noisy = page + np.random.default_rng(0).normal(0, 0.02, page.shape).astype(np.float32)
    assert upscale_factor(noisy) == 1.0
    assert restore_resolution(np.zeros((20, 30), np.float32)).shape == (37, 56)  # small: enlarged to 56 px


def test_a_digit_inside_a_form_cell_reads_as_the_same_digit_alone():
    alone = 0.92 - 0.85 * seven((100, 90), width=8)
    cell = alone.copy()
    for rows, cols in [(slice(6, 8), slice(None)), (slice(93, 96), slice(None)), (slice(None), slice(4, 6)),
                       (slice(None), slice(84, 86))]:  # a printed box, 2-3 px lines on all four sides
        cell[rows, cols] = 0.2
    cell[13:16, :] = np.minimum(cell[13:16, :], 0.3)  # and a line touching the top of the 7's bar
    within_a_pixel = [ndimage.gaussian_filter(to_mnist(gray)[..., 0].astype(np.float32), 1.0) for gray in (cell, alone)]
    assert correlation(*within_a_pixel) > 0.95


def test_ruled_lines_are_found_and_a_digits_own_bar_across_the_frame_is_not():
    mask = seven((100, 90), width=10) > 0.5
    mask[50:52, :] = True  # a thin line across the whole image, through the 7's stem
    lines = ruled_lines(mask)
    assert lines[50:52, :5].all() and lines[50:52, -5:].all()
    assert not lines[50:52][mask[46:48] & mask[55:57]].any()  # the stem's crossing stays in the digit
    bar = np.zeros((60, 80), bool)
    bar[0:10, :] = True  # a 7 cropped tight: its bar spans the frame, as thick as its stem
    bar[10:60, 40:50] = True
    assert not ruled_lines(bar).any()


def test_a_markers_strokes_are_thinned_and_blurred_ones_are_not():
    marker = np.zeros((80, 80), np.float32)
    marker[5:75, 28:52] = 1.0  # 24 px at 4x detail: 6 px in the 20-px box
    thinned = normalise_strokes(marker)
    assert stroke_width(thinned > 0.5) / 4 == pytest.approx(STROKE_THICK_TARGET, rel=0.2)
    blurred = ndimage.gaussian_filter(marker, 6)
    assert normalise_strokes(blurred) is blurred


def test_a_hairline_joined_to_a_stroke_stays_in_the_mask_and_a_faint_stray_one_does_not():
    ink = np.zeros((80, 80), np.float32)
    ink[10:70, 20:28] = 1.0  # a calligraphic face's thick stroke ...
    ink[10, 28:60] = ink[10:70, 60] = 0.5  # ... and the hairline it turns into: 1 px, half as strong
    ink[75, 10:70] = 0.3  # a faint stray line, touching nothing
    mask = ink_mask(ink)
    assert mask[10:70, 20:28].all() and mask[10:70, 60].all() and mask[10, 30:58].all()
    assert not mask[75].any()


def on_desk(page: np.ndarray, margins: tuple[int, int, int, int], degrees: float = 0.0) -> np.ndarray:
    """`page` (h, w) lying on a dark, grained desk that shows `margins` px beyond its (top, bottom, left,
    right) edges, the page turned by `degrees`."""
    (height, width), (top, bottom, left, right) = page.shape, margins
    shape = (height + top + bottom, width + left + right)
    sheet, placed = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    sheet[top : top + height, left : left + width], placed[top : top + height, left : left + width] = 1.0, page
    if degrees:
        sheet, placed = (ndimage.rotate(a, degrees, reshape=False, order=1) for a in (sheet, placed))
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    desk = 0.3 + 0.05 * np.sin(x / 5 + y / 40) + np.random.default_rng(0).normal(0, 0.02, shape)
    return (sheet * placed + (1 - sheet) * desk).astype(np.float32)


PAGE = 0.9 - 0.8 * seven((150, 120), width=7)


@pytest.mark.parametrize("margins, degrees", [((0, 0, 40, 0), 0.0), ((0, 35, 30, 0), 0.0), ((30, 30, 30, 30), 6.0)])
def test_a_page_photographed_on_a_desk_reads_as_the_page_alone(margins, degrees):
    photo = on_desk(PAGE, margins, degrees)
    alone = ndimage.rotate(PAGE, degrees, reshape=False, order=1, mode="nearest")  # the same seven, turned alike
    assert sheet_mask(photo) is not None
    assert correlation(to_mnist(photo), to_mnist(alone)) > 0.9  # the seven, not the desk's edge


def test_pages_with_no_desk_in_view_are_left_whole():
    y, x = np.mgrid[0:150, 0:120] / 150
    shadowed = PAGE * (1.0 - 0.4 * x) * (1.0 - 0.2 / (1 + np.exp(-(y - 0.5) * 12)))  # light falling off, a soft shadow
    cell = PAGE.copy()
    cell[[6, 7, -8, -7], :] = cell[:, [6, 7, -8, -7]] = 0.2  # a form's cell around the digit
    marker = 0.95 - 0.9 * ring((90, 70), width=18)
    row = 0.9 - 0.8 * np.hstack([seven((150, 120), 9, offset=(-30, 0)), seven((150, 120), 7)])  # one reaches the top
    for page in (PAGE, shadowed.astype(np.float32), cell, marker, row):
        assert sheet_mask(page) is None


def test_rectangularity_is_one_for_a_rectangle_at_any_angle_and_lower_for_rounder_shapes():
    box = np.zeros((120, 160), bool)
    box[20:100, 30:130] = True
    turned = ndimage.rotate(box.astype(np.float32), 25, reshape=False, order=1) > 0.5
    disc = drawn((120, 160), lambda d, s: d.ellipse([10 * s, 10 * s, 150 * s, 110 * s], fill=255)) > 0.5
    assert rectangularity(box) == 1.0
    assert rectangularity(turned) > 0.97
    assert rectangularity(disc) == pytest.approx(np.pi / 4, abs=0.02)
