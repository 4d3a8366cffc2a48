"""Scoring trained models on a labelled split: ensembles, test-time augmentation, accuracy, calibration.

Everything here takes arrays and returns arrays or plain dicts; reading runs and writing
figures is the CLI's job (`mnist_jax.cli.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from mnist_jax.config import AugmentConfig
from mnist_jax.data.augment import augment
from mnist_jax.inference.predict import predict
from mnist_jax.training.step import TrainState, scale_images

CALIBRATION_BINS = 15
# Test-time views: small moves that keep a digit what it is, even for a model trained without augmentation.
TTA_AUGMENT = AugmentConfig(rotation=6.0, scale=0.05, translation=1.0)
TTA_SEED = 0  # fixed, so an evaluation is a function of the checkpoints alone


def tta_views(images: np.ndarray, views: int, seed: int = TTA_SEED) -> list[np.ndarray]:
    """Returns `views` versions of uint8 images (N, 28, 28, 1): the images, then random small distortions.

    The distortions are float32 on the 0-255 scale (what `predict` expects), one per image and
    view, from a fixed key.
    """
    scaled = scale_images(images)
    key = jax.random.key(seed)
    return [images] + [np.asarray(augment(scaled, jax.random.fold_in(key, view), TTA_AUGMENT)) * 255.0
                       for view in range(1, views)]


def ensemble_probabilities(states: Sequence[TrainState], images: np.ndarray, views: int = 1,
                           temperatures: Sequence[float] | None = None) -> np.ndarray:
    """Returns the mean softmax probabilities (N, C) over every state and test-time view of the images.

    temperatures: one per state, dividing its logits (see `temperature.py`); None: 1.0 for each.
    """
    inputs = tta_views(images, views)
    temperatures = [1.0] * len(states) if temperatures is None else temperatures
    return np.mean([predict(state, view, temperature=temperature)
                    for state, temperature in zip(states, temperatures, strict=True) for view in inputs], axis=0)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Returns counts (classes, classes): row = true class, column = predicted class."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Returns the reliability diagram's bins and the expected calibration error (Guo et al. 2017).

    Predictions are grouped by confidence (their top probability) into `bins` equal-width
    intervals (lo, hi]; ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|.
    Returns {"ece", "edges" (bins+1,), "count", "accuracy", "confidence" (bins,) each; empty bins 0}.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    filled = np.maximum(count, 1)
    accuracy = np.bincount(index, weights=correct, minlength=bins) / filled
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / filled
    ece = float(np.sum(count / len(labels) * np.abs(accuracy - mean_confidence)))
    return {"ece": ece, "edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "accuracy": accuracy,
            "confidence": mean_confidence}


def summarize(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Returns accuracy, errors, loss (mean negative log-likelihood), per-class accuracy, confusion and ECE.

    probabilities: (N, C); labels: int (N,). Plain JSON types only.
    """
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, probabilities.shape[1])
    per_class = np.diag(confusion) / confusion.sum(axis=1)
    likelihood = probabilities[np.arange(len(labels)), labels]
    return {
        "images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "errors": int(np.sum(predicted != labels)),
        "loss": float(-np.mean(np.log(np.maximum(likelihood, np.finfo(np.float32).tiny)))),
        "per_class_accuracy": [float(a) for a in per_class],
        "per_class_images": [int(n) for n in confusion.sum(axis=1)],
        "expected_calibration_error": calibration(probabilities, labels)["ece"],
        "calibration_bins": CALIBRATION_BINS,
        "confusion_matrix": confusion.tolist(),
    }
