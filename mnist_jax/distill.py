"""The teachers of a distilled run: the mean probabilities of trained runs on its training images.

`train.distillation` d mixes them into the targets (see `train.cross_entropy_loss`): the student
learns which wrong digits an ensemble finds plausible, not only the right one (Hinton et al. 2015).
The run keeps them in its directory, so a resumed run trains on the same targets even if a
teacher has trained on, moved or gone since.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_jax import checkpoint
from mnist_jax.config import Config
from mnist_jax.dataset import Split
from mnist_jax.errors import UserError
from mnist_jax.evaluation import ensemble_probabilities

TEACHERS = "teachers.npy"  # in the run directory: the teachers' probabilities (N, 10) float32


def teacher_targets(config: Config, workdir: Path, split: Split, log: Callable[[str], None] = print) -> np.ndarray:
    """Returns the teachers' probabilities (N, 10) for the N images of `split`: those an earlier start of
    the run in `workdir` kept (see `keep_teachers`), else `teacher_probabilities`."""
    path = Path(workdir) / TEACHERS
    if not path.exists():
        return teacher_probabilities(config, split.images, split.labels, workdir, log)
    try:
        probabilities = np.load(path)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"cannot read {path} ({error}); "
                        "delete it to compute the teachers' probabilities again") from None
    if probabilities.shape != (len(split.labels), 10):
        raise UserError(f"{path} holds probabilities of shape {probabilities.shape}, not ({len(split.labels)}, 10) "
                        "for this run's training images; delete it to compute them again")
    log(f"teachers: their probabilities on the {len(split.labels):,} training images read from {path}")
    return probabilities


def keep_teachers(workdir: Path, probabilities: np.ndarray) -> None:
    """Writes the teachers' probabilities to workdir/teachers.npy, unless they are there already.

    Written to a temporary file first, then renamed: a run killed meanwhile leaves no partial file.
    """
    path = Path(workdir) / TEACHERS
    if path.exists():
        return
    partial = path.with_suffix(".partial.npy")
    np.save(partial, probabilities)
    os.replace(partial, path)


def teacher_probabilities(config: Config, images: np.ndarray, labels: np.ndarray, workdir: Path,
                          log: Callable[[str], None] = print) -> np.ndarray:
    """Returns the mean softmax (N, 10) float32 of the best checkpoints of `config.train.teachers` on
    uint8 images (N, 28, 28, 1) with labels (N,), the training images of the run in `workdir`.

    Each teacher's raw softmax is used, not its calibrated one: teachers trained with label
    smoothing are underconfident, which is what keeps their targets soft. Raises UserError for a
    missing teacher, the run itself, or a teacher that trained on any of this run's validation
    images, since those must stay unseen.
    """
    started = time.perf_counter()
    for path in config.train.teachers:
        if not Path(path).is_dir():
            raise UserError(f"teacher {path} (train.teachers) does not exist; "
                            "name run directories written by bin/train")
        if Path(path).resolve() == Path(workdir).resolve():
            raise UserError(f"teacher {path} is this run's own directory {workdir}; a run cannot teach itself")
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
