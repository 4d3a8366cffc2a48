"""A user's image file -> the model's inputs: what bin/predict, bin/eval-inputs and the library all call."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mnist_jax.data import catalog
from mnist_jax.errors import ImageError
from mnist_jax.inference.files import MAX_PIXELS
from mnist_jax.inference.preprocess import (
    CHARACTER_FRAMING,
    DIGIT_FRAMING,
    ITEM_FRAMING,
    Framing,
    crop_to_mnist,
    load_grayscale,
    to_mnist,
)
from mnist_jax.inference.segment import split_digits

_FRAMINGS = {catalog.INK: DIGIT_FRAMING, catalog.CHARACTER: CHARACTER_FRAMING, catalog.ITEM: ITEM_FRAMING}


def framing_of(data: str) -> Framing:
    """The framing of the images of data set `data` ("mnist", "emnist/letters", ...: `data.catalog`)."""
    return _FRAMINGS[catalog.get(data).framing]


def read_inputs(source: Path | str | bytes, number: bool = False, max_pixels: int = MAX_PIXELS,
                name: str | None = None, framing: Framing = DIGIT_FRAMING) -> list[np.ndarray]:
    """Returns the model's uint8 images (28, 28, 1) in one image file: one, or with `number` one per
    character of a row, left to right; framed as the model's data set was (`framing_of`; MNIST's by default).

    source: a path, or the file's bytes (`name` then names it in errors). Raises an ImageError
    (NotAnImage, ImageTooLarge, NoInk) that names the file.
    """
    label = name if isinstance(source, bytes) else str(source)
    try:
        gray = load_grayscale(io.BytesIO(source) if isinstance(source, bytes) else Path(source), max_pixels)
        if number:
            return [crop_to_mnist(crop, framing) for crop in split_digits(gray)]
        return [to_mnist(gray, framing)]
    except ImageError as error:
        raise error.at(label) if label is not None else error from None
