"""What every predicting model offers, whatever runs it (JAX on a checkpoint, onnxruntime on an ONNX
file): `predict` and its `ModelInfo`. JAX-free."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

BATCH_SIZE = 128  # images per call of the runtime
INPUT_CONTRACT = "uint8 (N, 28, 28, 1)"  # MNIST-style pixels 0-255, white ink on black (inference.inputs)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    source: Path  # the run directory or the .onnx file
    runtime: str  # "jax" or "onnxruntime"
    precision: str  # what the model computes in: "float32", "bfloat16" or "int8"
    data: str  # the data set it was trained on (`data.catalog`): "mnist", "fashion_mnist", ...
    classes: tuple[str, ...]  # output i's name: the digit i for MNIST
    temperature: float  # probabilities are softmax(logits / temperature)
    test_accuracy: float | None  # on its data set's test split, as measured (None: not known)
    step: int | None  # the checkpoint step the model's parameters come from
    input: str = INPUT_CONTRACT

    @property
    def description(self) -> str:
        """One line naming the model, e.g. "runs/a, checkpoint step 6876 (jax, float32)"."""
        step = f", checkpoint step {self.step}" if self.step is not None else ""
        return f"{self.source}{step} ({self.runtime}, {self.precision})"


class Model(Protocol):
    info: ModelInfo

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Returns calibrated probabilities float32 (N, C) for uint8 images (N, 28, 28, 1)."""
        ...
