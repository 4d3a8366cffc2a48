"""The most likely digits of each prediction, from its probabilities. JAX-free."""

from __future__ import annotations

import numpy as np


def top_k(probabilities: np.ndarray, k: int = 3) -> list[list[tuple[int, float]]]:
    """Returns, per row of (N, 10) probabilities, the k most likely (digit, probability) pairs."""
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return [[(int(d), float(row[d])) for d in digits] for row, digits in zip(probabilities, order, strict=True)]
