"""A row of real MNIST digits on paper, split into digits left to right."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_jax.errors import NoInk
from mnist_jax.inference.preprocess import crop_to_mnist, to_mnist
from mnist_jax.inference.segment import group_parts, split_digits


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def box(top, bottom, left, right):
    return (slice(top, bottom), slice(left, right))


def test_parts_in_one_column_or_short_and_touching_are_one_digit():
    boxes = [
        box(0, 80, 200, 240),  # a digit
        box(0, 80, 10, 50),  # the first digit, given out of order
        box(10, 40, 100, 140), box(45, 80, 102, 138),  # a digit broken across: two parts in one column
        box(0, 12, 236, 270),  # a short flag touching the digit at 200-240 (a 5's)
        box(0, 80, 300, 310),  # a 1, close to the flag but not overlapping it
    ]
    assert group_parts(boxes) == [[1], [2, 3], [0, 4], [5]]


def test_a_row_of_digits_reads_left_to_right(mnist):
    indices = [3, 1, 4, 7]  # test digits, labels 0 2 1 9
    gaps = [30, 5, 20, 12]
    strips = [np.pad(np.kron(mnist.test_images[i, :, :, 0] / 255, np.ones((3, 3))), ((0, 0), (0, gap)))
              for i, gap in zip(indices, gaps, strict=True)]
    page = 0.9 - 0.8 * np.pad(np.concatenate(strips, axis=1), 40)
    crops = split_digits(page.astype(np.float32))
    assert len(crops) == len(indices)
    for crop, index in zip(crops, indices, strict=True):
        assert correlation(crop_to_mnist(crop), to_mnist(mnist.test_images[index, :, :, 0] / 255)) > 0.9


def test_a_digit_broken_across_its_middle_stays_one_digit(mnist):
    eight = np.kron(mnist.test_images[61, :, :, 0] / 255, np.ones((3, 3)))  # label 8, rows 15-65
    eight[40:44] = 0  # a gap right across: two stacked parts, each under 26 rows
    crops = split_digits((0.9 - 0.8 * np.pad(eight, 30)).astype(np.float32))
    assert len(crops) == 1 and crops[0].shape[0] >= 49


def test_a_blank_page_has_no_digits():
    with pytest.raises(NoInk, match="no ink found"):
        split_digits(np.full((50, 200), 0.9, np.float32))
