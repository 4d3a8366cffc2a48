"""The teachers of a distilled run: the mean probabilities of trained runs on its training images.

`train.distillation` d mixes them into the targets (see `step.cross_entropy_loss`): the student
learns which wrong digits an ensemble finds plausible, not only the right one (Hinton et al. 2015).
With `train.teacher_views` "clean" the teachers label the clean training images once and the run
keeps their probabilities; with "augmented" they label every augmented batch inside the step and
the run keeps which checkpoint of each teacher it started with. Either way a resumed run trains
on the same targets even if a teacher has trained on since.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_jax.config import Config
from mnist_jax.data.dataset import Split
from mnist_jax.errors import MnistJaxError, TeacherError
from mnist_jax.evaluation.metrics import ensemble_probabilities
from mnist_jax.run_dir import RunDir
from mnist_jax.training import checkpoint


def teaching(config: Config, workdir: Path, split: Split, keep: bool,
             log: Callable[[str], None] = print) -> dict:
    """Returns the teacher arguments of `loops.make_loop` for the run in `workdir` ({} if not distilled):
    "teacher_targets", the probabilities (N, C) of the N clean images of `split`, or "teachers", the states
    that label each augmented batch. With `keep` (the lead process), keeps them for a resume."""
    if not config.train.distillation:
        return {}
    if config.train.teacher_views == "augmented":
        restored = teacher_states(config, workdir, log)
        if keep:
            keep_teacher_steps(config, workdir, restored)
        return {"teachers": tuple(run.state.replace(opt_state=None) for run in restored)}  # no optimizer needed
    probabilities = teacher_targets(config, workdir, split, log)
    if keep:
        keep_teachers(workdir, probabilities)
    return {"teacher_targets": probabilities}


def teacher_targets(config: Config, workdir: Path, split: Split, log: Callable[[str], None] = print) -> np.ndarray:
    """Returns the teachers' probabilities (N, C) for the N images of `split`: those an earlier start of
    the run in `workdir` kept (see `keep_teachers`), else `teacher_probabilities`."""
    path = RunDir(workdir).teacher_probabilities
    if not path.exists():
        return teacher_probabilities(config, split.images, split.labels, workdir, log)
    try:
        probabilities = np.load(path)
    except (OSError, ValueError, EOFError) as error:
        raise TeacherError(f"cannot read the teachers' kept probabilities {path} ({error})", path, "delete") from None
    expected = (len(split.labels), config.data.spec.num_classes)
    if probabilities.shape != expected:
        raise TeacherError(f"{path} holds probabilities of shape {probabilities.shape}, not {expected} for this "
                           "run's training images", path, "delete")
    log(f"teachers: their probabilities on the {len(split.labels):,} training images read from {path}")
    return probabilities


def keep_teachers(workdir: Path, probabilities: np.ndarray) -> None:
    """Writes the teachers' probabilities to workdir/teachers.npy, unless they are there already.

    Written to a temporary file first, then renamed: a run killed meanwhile leaves no partial file.
    """
    _write_once(RunDir(workdir).teacher_probabilities, lambda partial: np.save(partial, probabilities))


def teacher_states(config: Config, workdir: Path, log: Callable[[str], None] = print) -> list[checkpoint.Restored]:
    """Returns the checkpoints of `config.train.teachers` that label the augmented views: those an earlier
    start of the run in `workdir` kept (see `keep_teacher_steps`), else each teacher's best.

    Raises TeacherError for the teachers `restore_teachers` refuses, and for a kept file that is
    damaged, names other teachers or names a step that is gone.
    """
    path = RunDir(workdir).teacher_steps
    steps = None
    if path.exists():
        try:
            runs, steps = zip(*[(entry["run"], int(entry["step"])) for entry in json.loads(path.read_text())],
                              strict=True)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise TeacherError(f"cannot read the teachers' kept steps {path} ({error!r})", path, "delete") from None
        if runs != config.train.teachers:
            raise TeacherError(f"{path} names the teachers {', '.join(runs)}, not train.teachers", path, "fresh")
    restored = restore_teachers(config, workdir, steps)
    log(f"teachers: {_count(restored)} label every augmented batch (checkpoint steps "
        f"{', '.join(str(run.step) for run in restored)}{', kept in ' + str(path) if steps else ''})")
    return restored


def keep_teacher_steps(config: Config, workdir: Path, teachers: list[checkpoint.Restored]) -> None:
    """Writes which checkpoint of each teacher the run uses to workdir/teachers.json, unless it is there."""
    entries = [{"run": path, "step": run.step} for path, run in zip(config.train.teachers, teachers, strict=True)]
    _write_once(RunDir(workdir).teacher_steps, lambda partial: partial.write_text(json.dumps(entries, indent=1)))


def _write_once(path: Path, write: Callable[[Path], None]) -> None:
    """Calls write(partial) unless `path` exists, then renames partial to `path`: a run killed meanwhile
    leaves no partial file at `path`."""
    if path.exists():
        return
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    write(partial)
    os.replace(partial, path)


def teacher_probabilities(config: Config, images: np.ndarray, labels: np.ndarray, workdir: Path,
                          log: Callable[[str], None] = print) -> np.ndarray:
    """Returns the mean softmax (N, C) float32 of the best checkpoints of `config.train.teachers` on
    uint8 images (N, 28, 28, 1) with labels (N,), the training images of the run in `workdir`.

    Each teacher's raw softmax is used, not its calibrated one: teachers trained with label
    smoothing are underconfident, which is what keeps their targets soft. Raises TeacherError for
    the teachers `restore_teachers` refuses.
    """
    started = time.perf_counter()
    restored = restore_teachers(config, workdir)
    probabilities = ensemble_probabilities([run.state for run in restored], images).astype(np.float32)
    agreement = np.mean(probabilities.argmax(axis=1) == labels)
    log(f"teachers: {_count(restored)}, {100 * agreement:.2f}% right on the {len(labels):,} training images, "
        f"mean top probability {probabilities.max(axis=1).mean():.3f} ({time.perf_counter() - started:.0f} s)")
    return probabilities


def restore_teachers(config: Config, workdir: Path, steps: list[int] | None = None) -> list[checkpoint.Restored]:
    """Restores the checkpoint `steps` (default: the best) of each run in `config.train.teachers`.

    Raises TeacherError for a missing teacher or step, the run in `workdir` itself, or a teacher that
    trained on any of this run's validation images, since those must stay unseen.
    """
    for path in config.train.teachers:
        if not Path(path).is_dir():
            raise TeacherError(f"teacher {path} (train.teachers) is not a run directory", Path(path))
        if Path(path).resolve() == Path(workdir).resolve():
            raise TeacherError(f"teacher {path} is this run's own directory {workdir}; a run cannot teach itself",
                               Path(path))
    restored = []
    for path, step in zip(config.train.teachers, steps or ["best"] * len(config.train.teachers), strict=True):
        try:
            run = checkpoint.restore(path, str(step))
        except MnistJaxError as error:
            if step == "best":
                raise
            raise TeacherError(f"teacher {path} no longer has checkpoint step {step}, which this run started with "
                               f"({error})", Path(path), "fresh") from None
        if run.config.data.name != config.data.name:
            raise TeacherError(f"teacher {path} was trained on {run.config.data.name}, this run on {config.data.name}",
                               Path(path))
        if run.config.data.validation_size < config.data.validation_size:
            raise TeacherError(f"teacher {path} trained on images this run validates on (its data.validation_size "
                               f"{run.config.data.validation_size} < {config.data.validation_size}); "
                               "distill only from runs that held out at least as many", Path(path))
        restored.append(run)
    return restored


def _count(teachers: list) -> str:
    return f"{len(teachers)} run{'s' if len(teachers) > 1 else ''}"
