"""How an exported model's probabilities compare with its reference's on the same labelled images. JAX-free."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Agreement:
    images: int
    accuracy: float  # the model's top-1 accuracy
    reference_accuracy: float  # the reference's
    differing: int  # images whose top-1 digit differs from the reference's
    max_difference: float  # the largest |probability - reference probability| over every image and class


def agreement(probabilities: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> Agreement:
    """Compares probabilities (N, 10) with the reference's (N, 10) on images of int `labels` (N,)."""
    top, reference_top = probabilities.argmax(axis=1), reference.argmax(axis=1)
    return Agreement(images=len(labels), accuracy=float(np.mean(top == labels)),
                     reference_accuracy=float(np.mean(reference_top == labels)),
                     differing=int(np.sum(top != reference_top)),
                     max_difference=float(np.abs(probabilities - reference).max(initial=0.0)))
