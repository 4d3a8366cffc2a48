"""Orbax checkpoints of a run: the train state and the config that built it, saved together.

A checkpoint directory alone is enough to rebuild the model: the config is read first, the
state is then restored against an abstract target placed on this machine's device, so a
checkpoint written on a GPU (or many devices) restores on a laptop's CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from mnist_jax import config as config_lib
from mnist_jax.config import Config
from mnist_jax.errors import UserError
from mnist_jax.training.step import TrainState, create_train_state
from mnist_jax.writable import check_writable

CHECKPOINTS = "checkpoints"  # subdirectory of a run directory


def saved_steps(directory: Path) -> list[int]:
    """Returns the completed steps in a checkpoints directory, ascending (a save in flight has a tmp name)."""
    return sorted(int(child.name) for child in Path(directory).glob("*") if child.name.isdigit())


def _best_metric(metrics: dict) -> float:
    return metrics["val_accuracy"]


def open_manager(directory: Path, keep: int = 2, read_only: bool = False) -> ocp.CheckpointManager:
    """Returns a manager for `directory` that keeps the latest `keep` steps and the best one.

    "Best" is the highest validation accuracy passed as metrics to `save`; steps saved
    without metrics (inside an epoch) are kept only while among the latest. Saves are
    asynchronous: call `wait_until_finished()` and `close()` before the process exits.
    Temporary directories left by a save that was killed are removed when a writer opens.
    Raises UserError when a step's stored metrics cannot be read.
    """
    _check_metrics(Path(directory))
    if read_only:
        options = ocp.CheckpointManagerOptions(best_fn=_best_metric, best_mode="max", read_only=True, create=False)
    else:
        best = BestN(get_metric_fn=_best_metric, n=1, keep_checkpoints_without_metrics=False)
        options = ocp.CheckpointManagerOptions(
            best_fn=_best_metric,
            best_mode="max",
            preservation_policy=AnyPreservationPolicy([LatestN(n=keep), best]),
            enable_async_checkpointing=True,
            cleanup_tmp_directories=True,
        )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _check_metrics(directory: Path) -> None:
    """Raises UserError naming the first step whose metrics file is unreadable: orbax reads every
    step's metrics when a manager opens, and would fail with a bare JSON error."""
    for step in saved_steps(directory):
        path = directory / str(step) / "metrics" / "metrics"
        try:
            if path.exists():
                json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"checkpoint step {step} in {directory} is damaged ({_reason('metrics', error)}); "
                            f"move {directory / str(step)} out of {directory} to use the other checkpoints") from None


def save(manager: ocp.CheckpointManager, step: int, state: TrainState, config: Config,
         metrics: dict[str, float] | None, progress: dict[str, float]) -> None:
    """Starts saving `state` (at `step`), `config` and the epoch's running `progress` as step `step`.

    metrics: {"val_accuracy", ...} at an epoch end (ranks the step for "best"; "val_temperature"
    becomes the step's `Restored.temperature`), None inside an epoch.
    Raises UserError when the directory cannot be written; the earlier steps stay intact.
    """
    try:
        # Saves run in the background; a directory that cannot be written is found here, at once.
        check_writable(manager.directory)
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config_lib.to_dict(config)),
                progress=ocp.args.JsonSave(progress),
            ),
            metrics=metrics,
        )
    except OSError as error:
        raise _unwritable(manager.directory, f"checkpoint step {step}", error) from None


def finish(manager: ocp.CheckpointManager) -> None:
    """Waits for the save in flight and closes `manager`; raises UserError if that save failed."""
    try:
        manager.wait_until_finished()
    except OSError as error:
        raise _unwritable(manager.directory, "the last checkpoint", error) from None
    finally:
        manager.close()


def _unwritable(directory, what: str, error: OSError) -> UserError:
    return UserError(f"cannot write {what} in {directory} ({error.strerror or error}); "
                     "the checkpoints before it are intact; free space or fix permissions, then rerun to resume")


def on_device(device: jax.Device | None = None) -> jax.sharding.Sharding:
    """Returns the sharding that puts a whole array on `device` (default: this process's first)."""
    return jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])


def abstract_state(config: Config, sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """Returns the TrainState `config` builds, as shape/dtype structs placed with `sharding`."""
    sharding = sharding or on_device()
    shapes = jax.eval_shape(functools.partial(create_train_state, config), jax.random.key(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


@dataclasses.dataclass(frozen=True)
class Restored:
    state: TrainState
    config: Config
    step: int
    directory: Path  # the checkpoints directory the step came from
    temperature: float = 1.0  # calibrates the step's probabilities; 1.0 (none) for steps saved inside an epoch


def restore(path: Path, which: str = "best", device: jax.Device | None = None) -> Restored:
    """Restores a checkpoint onto `device` (default: this process's first device).

    path: a run directory, its checkpoints directory, or one step's directory.
    which: "best" (highest validation accuracy), "latest", or a step number; ignored when
    `path` names a step. Raises UserError when nothing restorable is there.
    """
    directory, step = _locate(Path(path), which)
    manager = open_manager(directory, read_only=True)
    try:
        steps = manager.all_steps()
        if step is None:
            step = manager.latest_step() if which == "latest" else manager.best_step()
        if step is None or step not in steps:
            raise UserError(f"no checkpoint {'step ' + str(step) if step is not None else ''}in {directory}; "
                            f"available steps: {', '.join(map(str, steps)) or 'none'}")
        config = _read(manager, step, "config", ocp.args.JsonRestore(), config_lib.from_dict)
        state = _restore_state(manager, step, config, on_device(device))
        # Runs written before temperature scaling have no "val_temperature": they stay uncalibrated.
        temperature = (manager.metrics(step) or {}).get("val_temperature", 1.0)
    finally:
        manager.close()
    return Restored(state=state, config=config, step=step, directory=directory, temperature=temperature)


class DamagedCheckpoint(UserError):
    """A checkpoint step whose files cannot be read back."""

    def __init__(self, directory: Path, step: int, reason: str):
        super().__init__(f"checkpoint step {step} in {directory} is damaged ({reason})")
        self.step = step


def restore_for_resume(directory: Path, step: int, config: Config,
                       sharding: jax.sharding.Sharding | None = None) -> tuple[TrainState, dict[str, float]]:
    """Restores step `step` of a run trained with `config`; returns (state, epoch progress).

    Raises UserError naming the differing fields when the checkpoint was written by another
    config, and DamagedCheckpoint when its files cannot be read.
    """
    manager = open_manager(directory, read_only=True)
    try:
        stored = _read(manager, step, "config", ocp.args.JsonRestore(), config_lib.from_dict)
        if differences := config_lib.differences(stored, config):
            raise UserError(f"checkpoint step {step} in {directory} was written by another config "
                            f"({'; '.join(differences)}); train it in a new --workdir or pass --fresh")
        state = _restore_state(manager, step, config, sharding or on_device())
        progress = _read(manager, step, "progress", ocp.args.JsonRestore(), dict)
    finally:
        manager.close()
    return state, progress


def _read(manager: ocp.CheckpointManager, step: int, item: str, args, convert):
    """Returns `convert(item)` of step `step`, or raises DamagedCheckpoint if its files cannot be read."""
    try:
        return convert(manager.restore(step, args=ocp.args.Composite(**{item: args}))[item])
    except Exception as error:  # noqa: BLE001 - orbax/tensorstore raise bare Exceptions for unreadable files
        raise DamagedCheckpoint(manager.directory, step, _reason(item, error)) from None


def _restore_state(manager: ocp.CheckpointManager, step: int, config: Config, sharding) -> TrainState:
    target = abstract_state(config, sharding)
    try:
        with _stray_tracebacks_dropped_on_failure():
            try:
                state = _restore_tree(manager, step, target)
            except ValueError as error:
                if "tree structures do not match" not in str(error) or target.batch_stats or target.ema_params:
                    raise
                # Checkpoints of version 0.1 hold only step, params and opt_state: restore those.
                fields = {name: getattr(target, name) for name in ("step", "params", "opt_state")}
                state = target.replace(**_restore_tree(manager, step, fields))
    except Exception as error:  # noqa: BLE001 - orbax/tensorstore raise bare Exceptions for unreadable files
        raise DamagedCheckpoint(manager.directory, step, _reason("state", error)) from None
    # Truncated array files can read back as garbage instead of failing: the values must be finite.
    if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state.params)):
        raise DamagedCheckpoint(manager.directory, step, "state: parameters are not finite")
    return state


def _restore_tree(manager: ocp.CheckpointManager, step: int, target):
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]


@contextlib.contextmanager
def _stray_tracebacks_dropped_on_failure(settle_seconds: float = 0.5):
    """Holds back what is written to file descriptor 2 while restoring; drops it if the restore fails.

    When one array of a checkpoint cannot be read, tensorstore's other reads still finish and
    call back into orbax's closed event loop, and C++ prints their tracebacks straight to fd 2.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(settle_seconds)  # let the abandoned reads report into `held`
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _reason(item: str, error: BaseException) -> str:
    while error.__cause__ is not None:  # orbax wraps tensorstore's error, which names the file
        error = error.__cause__
    first_line = (str(error).strip().splitlines() or [""])[0][:160]
    return f"{item}: {type(error).__name__}: {first_line}"


def _locate(path: Path, which: str) -> tuple[Path, int | None]:
    """Returns (checkpoints directory, step or None) for a run, checkpoints or step path."""
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist; train one with bin/train or pass --run DIR")
    if (path / CHECKPOINTS).is_dir():
        return path / CHECKPOINTS, _parse_which(which)
    if path.name.isdigit() and (path / "state").is_dir():
        return path.parent, int(path.name)
    if saved_steps(path):
        return path, _parse_which(which)
    raise UserError(f"{path} holds no checkpoints; pass a run directory written by bin/train")


def _parse_which(which: str) -> int | None:
    if which in ("best", "latest"):
        return None
    if str(which).isdigit():
        return int(which)
    raise UserError(f"unknown checkpoint {which!r}; use best, latest or a step number")
