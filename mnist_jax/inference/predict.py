"""Batched, jitted digit probabilities from a trained state (see `checkpoint.restore`)."""

from __future__ import annotations

import jax
import numpy as np

from mnist_jax.data.mnist import NUM_CLASSES
from mnist_jax.training.step import TrainState, inference_logits, padded_batches, scale_images

BATCH_SIZE = 128  # every call runs this many rows, so predicting compiles once


@jax.jit
def predict_probs(state: TrainState, images: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Returns class probabilities softmax(logits / temperature) (B, 10) for uint8 images (B, 28, 28, 1).

    Applies `inference_variables(state)`: the EMA params when the run kept them, else the params.
    `temperature` is traced: every value runs the same compiled function.
    """
    return jax.nn.softmax(inference_logits(state, scale_images(images)) / temperature)


def predict(state: TrainState, images: np.ndarray, batch_size: int = BATCH_SIZE,
            temperature: float = 1.0) -> np.ndarray:
    """Returns probabilities (N, 10) for uint8 images (N, 28, 28, 1), in fixed-size batches.

    `temperature`: a checkpoint's `Restored.temperature` calibrates them; 1.0 gives the raw softmax.
    """
    if len(images) == 0:
        return np.zeros((0, NUM_CLASSES), np.float32)
    temperature = float(temperature)  # a weakly typed scalar, like the default: one compile for every value
    parts = [
        np.asarray(predict_probs(state, batch["image"], temperature))[batch["mask"] > 0]
        for batch in padded_batches(images, batch_size)
    ]
    return np.concatenate(parts)

