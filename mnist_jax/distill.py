"""The teachers of a distilled run: the mean probabilities of trained runs on its training images.

`train.distillation` d mixes them into the targets (see `train.cross_entropy_loss`): the student
learns which wrong digits an ensemble finds plausible, not only the right one (Hinton et al. 2015).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_jax import checkpoint
from mnist_jax.config import Config
from mnist_jax.errors import UserError
from mnist_jax.evaluation import ensemble_probabilities


def teacher_probabilities(config: Config, images: np.ndarray, labels: np.ndarray,
                          log: Callable[[str], None] = print) -> np.ndarray:
    """Returns the mean softmax (N, 10) float32 of the best checkpoints of `config.train.teachers` on
    uint8 images (N, 28, 28, 1), the training images of the run being distilled.

    Each teacher's raw softmax is used, not its calibrated one: teachers trained with label
    smoothing are underconfident, which is what keeps their targets soft. Raises UserError for a
    teacher that trained on any of this run's validation images, since those must stay unseen.
    """
    started = time.perf_counter()
    for path in config.train.teachers:
        if not Path(path).is_dir():
            raise UserError(f"teacher {path} (train.teachers) does not exist; "
                            "name run directories written by bin/train")
    restored = [checkpoint.restore(path) for path in config.train.teachers]
    for path, run in zip(config.train.teachers, restored, strict=True):
        if run.config.data.validation_size < config.data.validation_size:
            raise UserError(f"teacher {path} trained on images this run validates on (its data.validation_size "
                            f"{run.config.data.validation_size} < {config.data.validation_size}); "
                            "distill only from runs that held out at least as many")
    probabilities = ensemble_probabilities([run.state for run in restored], images).astype(np.float32)
    agreement = np.mean(probabilities.argmax(axis=1) == labels)
    runs = f"{len(restored)} run{'s' if len(restored) > 1 else ''}"
    log(f"teachers: {runs}, {100 * agreement:.2f}% right on the {len(labels):,} training images, "
        f"mean top probability {probabilities.max(axis=1).mean():.3f} ({time.perf_counter() - started:.0f} s)")
    return probabilities
