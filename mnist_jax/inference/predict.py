"""Batched, jitted digit probabilities from a trained state (see `checkpoint.restore`), and a run's
checkpoint as an `inference.model.Model`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from mnist_jax.inference.model import BATCH_SIZE, ModelInfo  # BATCH_SIZE: every call runs as many rows: one compile
from mnist_jax.run_dir import RunDir
from mnist_jax.training.step import TrainState, inference_logits, padded_batches, scale_images

if TYPE_CHECKING:
    from mnist_jax.training.checkpoint import Restored


@jax.jit
def predict_probs(state: TrainState, images: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Returns class probabilities softmax(logits / temperature) (B, C) for uint8 images (B, 28, 28, 1).

    Applies `inference_variables(state)`: the EMA params when the run kept them, else the params.
    `temperature` is traced: every value runs the same compiled function.
    """
    return jax.nn.softmax(inference_logits(state, scale_images(images)) / temperature)


def predict(state: TrainState, images: np.ndarray, batch_size: int = BATCH_SIZE,
            temperature: float = 1.0) -> np.ndarray:
    """Returns probabilities (N, C) for uint8 images (N, 28, 28, 1), in fixed-size batches.

    `temperature`: a checkpoint's `Restored.temperature` calibrates them; 1.0 gives the raw softmax.
    """
    temperature = float(temperature)  # a weakly typed scalar, like the default: one compile for every value
    parts = [
        np.asarray(predict_probs(state, batch["image"], temperature))[batch["mask"] > 0]
        for batch in padded_batches(images, batch_size)
    ]
    if not parts:  # no images: the shape the model would give, without running it
        shape = jax.eval_shape(predict_probs, state, jax.ShapeDtypeStruct((1, 28, 28, 1), np.uint8)).shape
        return np.zeros((0, shape[1]), np.float32)
    return np.concatenate(parts)


@dataclasses.dataclass(frozen=True)
class RunModel:
    """A restored checkpoint predicting with JAX on this machine's device (see `load_run_model`)."""

    run: Restored
    info: ModelInfo

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Returns calibrated probabilities (N, C) for uint8 images (N, 28, 28, 1)."""
        return predict(self.run.state, images, batch_size, self.run.temperature)


def load_run_model(path: Path, which: str = "best") -> RunModel:
    """Restores checkpoint `which` of the run at `path` (see `checkpoint.restore`, which raises its errors)."""
    from mnist_jax.training import checkpoint  # orbax: only for restoring

    run = checkpoint.restore(path, which)
    data = run.config.data.spec
    info = ModelInfo(source=Path(path), runtime="jax", precision=run.config.model.dtype, data=data.name,
                     classes=data.classes, temperature=run.temperature,
                     test_accuracy=RunDir(run.directory.parent).test_accuracy(run.step), step=run.step)
    return RunModel(run, info)
