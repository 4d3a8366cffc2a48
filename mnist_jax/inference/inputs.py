"""A user's image file -> the model's inputs: what bin/predict, bin/eval-inputs and the library all call."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mnist_jax.errors import ImageError
from mnist_jax.inference.files import MAX_PIXELS
from mnist_jax.inference.preprocess import crop_to_mnist, load_grayscale, to_mnist
from mnist_jax.inference.segment import split_digits


def read_inputs(source: Path | str | bytes, number: bool = False, max_pixels: int = MAX_PIXELS,
                name: str | None = None) -> list[np.ndarray]:
    """Returns the MNIST-style uint8 images (28, 28, 1) in one image file: one, or with `number` one
    per digit of a row, left to right.

    source: a path, or the file's bytes (`name` then names it in errors). Raises an ImageError
    (NotAnImage, ImageTooLarge, NoInk) that names the file.
    """
    label = name if isinstance(source, bytes) else str(source)
    try:
        gray = load_grayscale(io.BytesIO(source) if isinstance(source, bytes) else Path(source), max_pixels)
        return [crop_to_mnist(crop) for crop in split_digits(gray)] if number else [to_mnist(gray)]
    except ImageError as error:
        raise error.at(label) if label is not None else error from None
