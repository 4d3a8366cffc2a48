"""Speed figures of an ONNX model on onnxruntime: single-image latency and batch throughput. JAX-free.

A CNN's arithmetic does not depend on its pixels, so the inputs are one drawn digit (`drawn_digit`),
repeated: the figures need no MNIST, and so run on any board with the light install.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image, ImageDraw

from mnist_jax.evaluation.figures import spread
from mnist_jax.inference.model import Model

WARM_UP = 20  # calls before the timed ones: onnxruntime allocates its buffers on the first


def drawn_digit() -> Image.Image:
    """A 7 drawn in white on black, 28x28, as a user's PNG would hold it."""
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    return image


def latency(model: Model, runs: int) -> dict:
    """spread() of the milliseconds `model.predict` takes for one image, over `runs` calls."""
    image = np.asarray(drawn_digit())[None, :, :, None]
    for _ in range(WARM_UP):
        model.predict(image)
    milliseconds = []
    for _ in range(runs):
        started = time.perf_counter()
        model.predict(image)
        milliseconds.append(1000 * (time.perf_counter() - started))
    return spread(milliseconds)


def throughput(model: Model, batch_size: int, repeats: int) -> dict:
    """spread() of the images per second `model.predict` reads in batches of `batch_size`, over `repeats` calls."""
    images = np.repeat(np.asarray(drawn_digit())[None, :, :, None], batch_size, axis=0)
    model.predict(images, batch_size)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(images, batch_size)
        rates.append(batch_size / (time.perf_counter() - started))
    return spread(rates)
