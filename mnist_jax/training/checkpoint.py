"""Orbax checkpoints of a run: the train state and the config that built it, saved together.

A checkpoint directory alone is enough to rebuild the model: the config is read first, the
state is then restored against an abstract target placed on this machine's device, so a
checkpoint written on a GPU (or many devices) restores on a laptop's CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from mnist_jax import config as config_lib
from mnist_jax.config import Config
from mnist_jax.errors import CheckpointFormatError, DamagedCheckpoint, NoCheckpoint, NotWritable, OtherConfig
from mnist_jax.run_dir import RunDir, saved_steps
from mnist_jax.training.step import TrainState, all_finite, create_train_state
from mnist_jax.writable import check_writable

# What a checkpoint holds: state (step, params, opt_state, batch_stats, ema_params), config, progress.
FORMAT_VERSION = 1


def _best_metric(metrics: dict) -> float:
    return metrics["val_accuracy"]


def open_manager(directory: Path, keep: int = 2, read_only: bool = False) -> ocp.CheckpointManager:
    """Returns a manager for `directory` that keeps the latest `keep` steps and the best one.

    "Best" is the highest validation accuracy passed as metrics to `save`; steps saved
    without metrics (inside an epoch) are kept only while among the latest. Saves are
    asynchronous: call `wait_until_finished()` and `close()` before the process exits.
    Temporary directories left by a save that was killed are removed when a writer opens.
    Raises DamagedCheckpoint when a step's stored metrics cannot be read.
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
    """Raises DamagedCheckpoint naming the first step whose metrics file is unreadable: orbax reads every
    step's metrics when a manager opens, and would fail with a bare JSON error."""
    for step in saved_steps(directory):
        path = directory / str(step) / "metrics" / "metrics"
        try:
            if path.exists():
                json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DamagedCheckpoint(directory, step, _reason("metrics", error)) from None


def save(manager: ocp.CheckpointManager, step: int, state: TrainState, config: Config,
         metrics: dict[str, float] | None, progress: dict[str, float]) -> None:
    """Starts saving `state` (at `step`), `config` and the epoch's running `progress` as step `step`.

    metrics: {"val_accuracy", ...} at an epoch end (ranks the step for "best"; "val_temperature"
    becomes the step's `Restored.temperature`), None inside an epoch.
    Raises NotWritable when the directory cannot be written; the earlier steps stay intact.
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
                format=ocp.args.JsonSave({"version": FORMAT_VERSION}),
            ),
            metrics=metrics,
        )
    except OSError as error:
        raise _unwritable(manager.directory, f"checkpoint step {step}", error) from None


def finish(manager: ocp.CheckpointManager) -> None:
    """Waits for the save in flight and closes `manager`; raises NotWritable if that save failed."""
    try:
        manager.wait_until_finished()
    except OSError as error:
        raise _unwritable(manager.directory, "the last checkpoint", error) from None
    finally:
        manager.close()


def _unwritable(directory, what: str, error: OSError) -> NotWritable:
    reason = error.strerror or str(error)
    return NotWritable(f"cannot write {what} in {directory} ({reason}); the checkpoints before it are intact",
                       Path(directory), reason, "checkpoint")


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
    `path` names a step. Raises NoCheckpoint when nothing restorable is there, DamagedCheckpoint or
    CheckpointFormatError when the step cannot be read.
    """
    directory, step = _locate(Path(path), which)
    manager = open_manager(directory, read_only=True)
    try:
        steps = manager.all_steps()
        if step is None:
            step = manager.latest_step() if which == "latest" else manager.best_step()
        if step is None or step not in steps:
            raise NoCheckpoint(f"no checkpoint {'step ' + str(step) if step is not None else ''}in {directory}; "
                               f"available steps: {', '.join(map(str, steps)) or 'none'}", directory)
        _check_format(manager, step)
        config = _read(manager, step, "config", ocp.args.JsonRestore(), config_lib.from_dict)
        state = _restore_state(manager, step, config, on_device(device))
        temperature = (manager.metrics(step) or {}).get("val_temperature", 1.0)  # none: saved inside an epoch
    finally:
        manager.close()
    return Restored(state=state, config=config, step=step, directory=directory, temperature=temperature)


def restore_for_resume(directory: Path, step: int, config: Config,
                       sharding: jax.sharding.Sharding | None = None) -> tuple[TrainState, dict[str, float]]:
    """Restores step `step` of a run trained with `config`; returns (state, epoch progress).

    Raises OtherConfig naming the differing fields when the checkpoint was written by another
    config, DamagedCheckpoint when its files cannot be read, CheckpointFormatError for another format.
    """
    manager = open_manager(directory, read_only=True)
    try:
        _check_format(manager, step)
        stored = _read(manager, step, "config", ocp.args.JsonRestore(), config_lib.from_dict)
        if differences := config_lib.differences(stored, config):
            raise OtherConfig(Path(directory), differences, step)
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


def _reports_abandoned_read(text: str) -> bool:
    """Whether `text` (an error's or a log record's) reports an orbax read abandoned by a failed restore."""
    return ("Encountered error while reading array index" in text or "Event loop is closed" in text
            or (text.startswith("Task exception was never retrieved") and "orbax/checkpoint" in text))


class _AbandonedReads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _reports_abandoned_read(record.getMessage())


@functools.cache
def _hold_back_abandoned_reads() -> None:
    """From the first failed restore on, drops the reports of its other reads, and only those.

    When one array of a checkpoint cannot be read, restore raises (`DamagedCheckpoint` says which),
    while the reads of the other arrays still finish, fail, and call back into orbax's closed event
    loop from tensorstore's threads: Python reports each as an unraisable exception, asyncio logs
    it as "Task exception was never retrieved", or it is never awaited. Every other report is kept.
    """
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not _reports_abandoned_read(str(unraisable.exc_value)):
            previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_AbandonedReads())
    # Reads never started when the loop closed are collected at exit, each with a warning.
    warnings.filterwarnings("ignore", r"coroutine '(_read\w*|async_deserialize)' was never awaited", RuntimeWarning)


def _restore_state(manager: ocp.CheckpointManager, step: int, config: Config, sharding) -> TrainState:
    target = abstract_state(config, sharding)
    try:
        state = _restore_tree(manager, step, target)
    except ValueError as error:
        _hold_back_abandoned_reads()
        if "tree structures do not match" in str(error):
            raise CheckpointFormatError(f"checkpoint step {step} in {manager.directory} is not a train state that "
                                        f"this version of mnist_jax reads: {_layout(manager, step)}",
                                        Path(manager.directory), None) from None
        raise DamagedCheckpoint(manager.directory, step, _reason("state", error)) from None
    except Exception as error:  # noqa: BLE001 - orbax/tensorstore raise bare Exceptions for unreadable files
        _hold_back_abandoned_reads()
        raise DamagedCheckpoint(manager.directory, step, _reason("state", error)) from None
    # Truncated array files can read back as garbage instead of failing: the values must be finite.
    if not bool(all_finite(state.params)):
        raise DamagedCheckpoint(manager.directory, step, "state: parameters are not finite")
    return state


def _check_format(manager: ocp.CheckpointManager, step: int) -> None:
    """Raises CheckpointFormatError unless step `step` is of FORMAT_VERSION (steps saved before
    checkpoints recorded their format are of version 1)."""
    if not (Path(manager.directory) / str(step) / "format").exists():
        return
    version = _read(manager, step, "format", ocp.args.JsonRestore(), lambda values: values.get("version"))
    if version != FORMAT_VERSION:
        raise CheckpointFormatError(f"checkpoint step {step} in {manager.directory} is of format {version}; "
                                    f"this version of mnist_jax reads format {FORMAT_VERSION}",
                                    Path(manager.directory), version)


STATE_FIELDS = ("step", "params", "opt_state", "batch_stats", "ema_params")  # a TrainState's, as orbax stores them


def _layout(manager: ocp.CheckpointManager, step: int) -> str:
    """Says how the state stored at `step` differs from a TrainState, from orbax's metadata file."""
    try:
        paths = json.loads((Path(manager.directory) / str(step) / "state" / "_METADATA").read_text())["tree_metadata"]
    except (OSError, ValueError, KeyError):
        return "its layout cannot be read"
    stored = {key.strip("()").split(",")[0].strip("' ") for key in paths}  # empty collections have an entry too
    missing = [name for name in STATE_FIELDS if name not in stored]
    return f"it lacks {', '.join(missing)}" if missing else "its arrays are of another model or layout"


def _restore_tree(manager: ocp.CheckpointManager, step: int, target):
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]


def _reason(item: str, error: BaseException) -> str:
    while error.__cause__ is not None:  # orbax wraps tensorstore's error, which names the file
        error = error.__cause__
    first_line = (str(error).strip().splitlines() or [""])[0][:160]
    return f"{item}: {type(error).__name__}: {first_line}"


def _locate(path: Path, which: str) -> tuple[Path, int | None]:
    """Returns (checkpoints directory, step or None) for a run, checkpoints or step path."""
    if not path.is_dir():
        raise NoCheckpoint(f"run directory {path} does not exist", path, no_run=True)
    checkpoints = RunDir(path).checkpoints
    if checkpoints.is_dir():
        return checkpoints, _parse_which(which)
    if path.name.isdigit() and (path / "state").is_dir():
        return path.parent, int(path.name)
    if saved_steps(path):
        return path, _parse_which(which)
    raise NoCheckpoint(f"{path} holds no checkpoints", path, no_run=True)


def _parse_which(which: str) -> int | None:
    if which in ("best", "latest"):
        return None
    if str(which).isdigit():
        return int(which)
    raise NoCheckpoint(f"unknown checkpoint {which!r}: it must be best, latest or a step number")
