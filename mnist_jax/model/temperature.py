"""Temperature scaling (Guo et al. 2017): one scalar T per checkpoint that calibrates its probabilities.

softmax(logits / T) keeps every prediction but moves its confidence: T < 1 sharpens the ~0.9
that a run trained with label smoothing puts on its answer. T minimises the validation
cross-entropy. It is chosen from sums over a fixed grid of candidates, which a validation pass
adds up batch by batch like its other sums, so it works unchanged when the pass is split over
devices and processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

GRID_STEP = 1 / 16  # log2 spacing of the candidates
TEMPERATURES = 2.0 ** np.arange(-4, 4 + GRID_STEP / 2, GRID_STEP)  # 1/16 .. 16, 129 candidates, 1.0 among them


def nll_by_temperature(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Returns the cross-entropy of softmax(logits / T) for each candidate T: (B, K) for logits (B, C), labels (B,)."""
    scaled = logits[:, None, :] / jnp.asarray(TEMPERATURES, logits.dtype)[None, :, None]
    return optax.softmax_cross_entropy_with_integer_labels(scaled, jnp.broadcast_to(labels[:, None], scaled.shape[:2]))


def fit_temperature(nll_sums: np.ndarray) -> float:
    """Returns the T that minimises the cross-entropy, from its sums over a split for each of TEMPERATURES (K,).

    The best candidate is refined by the vertex of the parabola (in log T) through it and its
    two neighbours, so T is not limited to the grid (but stays within it). Sums that cannot
    choose (not finite, or all equal: e.g. a model whose logits are all zero) give 1.0.
    """
    sums = np.asarray(nll_sums, np.float64)
    if sums.shape != TEMPERATURES.shape:
        raise ValueError(f"expected {len(TEMPERATURES)} sums, one per candidate temperature, got shape {sums.shape}")
    if not np.all(np.isfinite(sums)) or np.ptp(sums) == 0:
        return 1.0
    best = int(np.argmin(sums))
    offset = 0.0
    if 0 < best < len(sums) - 1:
        left, middle, right = sums[best - 1 : best + 2]
        curvature = left - 2 * middle + right
        if curvature > 0:
            offset = 0.5 * (left - right) / curvature  # in grid steps, within [-0.5, 0.5]
    return float(TEMPERATURES[best] * 2.0 ** (offset * GRID_STEP))
