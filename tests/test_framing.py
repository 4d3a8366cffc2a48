"""Users' images framed as each data set framed its own: MNIST's 20-px box centred by mass, EMNIST's
square frame with a 2-px border, Fashion-MNIST's item filling the frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_jax.data import catalog
from mnist_jax.evaluation.renders import ITEM_CONDITIONS, encode
from mnist_jax.inference.inputs import framing_of, read_inputs
from mnist_jax.inference.preprocess import CHARACTER_FRAMING, DIGIT_FRAMING, ITEM_FRAMING


def extent(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels over a tenth of the peak in a (28, 28, 1) image."""
    rows, cols = np.nonzero(image[:, :, 0] > 0.1 * image.max())
    return rows.min(), rows.max(), cols.min(), cols.max()


def shirt(side: int = 28) -> np.ndarray:
    """A T-shirt silhouette that fills a side x side frame, light on black with a shaded body, as
    Fashion-MNIST's items are: uint8 (side, side)."""
    canvas = Image.new("L", (side * 8, side * 8), 0)
    draw = ImageDraw.Draw(canvas)
    s = side * 8 / 28
    draw.polygon([(p[0] * s, p[1] * s) for p in
                  [(9, 0), (19, 0), (28, 7), (24, 11), (21, 8), (21, 28), (7, 28), (7, 8), (4, 11), (0, 7)]],
                 fill=200)
    draw.ellipse([11 * s, 4 * s, 17 * s, 20 * s], fill=150)  # a print on its front
    return np.asarray(canvas.resize((side, side), Image.Resampling.LANCZOS))


@pytest.mark.parametrize("name", ["catalogue-photo", "on-dark"])
def test_an_item_photographed_comes_back_filling_the_frame_as_fashion_mnist_items_do(name):
    item = shirt()
    rng = np.random.default_rng(0)
    seen = read_inputs(ITEM_CONDITIONS[name](item, rng), framing=ITEM_FRAMING)[0]
    top, bottom, left, right = extent(seen)
    assert max(bottom - top, right - left) + 1 >= 27  # the longer side fills the 28 px
    assert abs((top + bottom) / 2 - 13.5) <= 1 and abs((left + right) / 2 - 13.5) <= 1  # centred
    similarity = np.corrcoef(seen[:, :, 0].ravel().astype(float), item.ravel().astype(float))[0, 1]
    as_digit = read_inputs(ITEM_CONDITIONS[name](item, np.random.default_rng(0)), framing=DIGIT_FRAMING)[0]
    assert similarity > 0.85
    assert similarity > np.corrcoef(as_digit[:, :, 0].ravel().astype(float), item.ravel().astype(float))[0, 1]


def test_a_letter_is_framed_with_emnists_border_and_a_digit_in_mnists_box():
    page = Image.new("L", (300, 200), 230)
    ImageDraw.Draw(page).line([(60, 170), (110, 30), (160, 170)], fill=20, width=12)  # an "A" without its bar
    data = encode(page)
    letter = read_inputs(data, framing=CHARACTER_FRAMING)[0]
    digit = read_inputs(data, framing=DIGIT_FRAMING)[0]
    top, bottom, left, right = extent(letter)
    assert 23 <= max(bottom - top, right - left) + 1 <= 25 and min(top, left) >= 1
    top, bottom, left, right = extent(digit)
    assert 19 <= max(bottom - top, right - left) + 1 <= 21


def test_each_data_set_names_its_framing():
    assert framing_of("mnist") == framing_of("kmnist") == DIGIT_FRAMING
    assert all(framing_of(name) == CHARACTER_FRAMING for name in catalog.DATASETS if name.startswith("emnist/"))
    assert framing_of("fashion_mnist") == ITEM_FRAMING
