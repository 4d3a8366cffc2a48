"""Orbax checkpoints of a run: the train state and the config that built it, saved together.

A checkpoint directory alone is enough to rebuild the model: the config is read first, the
state is then restored against an abstract target placed on this machine's device, so a
checkpoint written on a GPU (or many devices) restores on a laptop's CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax.training.train_state import TrainState
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from mnist_jax import config as config_lib
from mnist_jax.config import Config
from mnist_jax.errors import UserError
from mnist_jax.train import create_train_state

CHECKPOINTS = "checkpoints"  # subdirectory of a run directory


def saved_steps(directory: Path) -> list[int]:
    """Returns the completed steps in a checkpoints directory, ascending (a save in flight has a tmp name)."""
    return sorted(int(child.name) for child in Path(directory).glob("*") if child.name.isdigit())


def _best_metric(metrics: dict) -> float:
    return metrics["val_accuracy"]


def open_manager(directory: Path, keep: int = 2, read_only: bool = False) -> ocp.CheckpointManager:
    """Returns a manager for `directory` that keeps the latest `keep` steps and the best one.

    "Best" is the highest validation accuracy passed as metrics to `save`. Saves are
    asynchronous: call `wait_until_finished()` and `close()` before the process exits.
    """
    if read_only:
        options = ocp.CheckpointManagerOptions(best_fn=_best_metric, best_mode="max", read_only=True, create=False)
    else:
        options = ocp.CheckpointManagerOptions(
            best_fn=_best_metric,
            best_mode="max",
            preservation_policy=AnyPreservationPolicy([LatestN(n=keep), BestN(get_metric_fn=_best_metric, n=1)]),
            enable_async_checkpointing=True,
        )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, state: TrainState, config: Config, metrics: dict[str, float]) -> None:
    """Starts saving `state` and `config` as step `state.step`, ranked by `metrics["val_accuracy"]`."""
    step = int(state.step)
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config_lib.to_dict(config)),
        ),
        metrics=metrics,
    )


def abstract_state(config: Config, device: jax.Device | None = None) -> TrainState:
    """Returns the TrainState `config` builds, as shape/dtype structs placed on `device`."""
    sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
    shapes = jax.eval_shape(functools.partial(create_train_state, config), jax.random.key(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


@dataclasses.dataclass(frozen=True)
class Restored:
    state: TrainState
    config: Config
    step: int
    directory: Path  # the checkpoints directory the step came from


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
        try:
            stored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
            config = config_lib.from_dict(stored["config"])
            target = abstract_state(config, device)
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"checkpoint step {step} in {directory} cannot be restored ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200]})") from None
    finally:
        manager.close()
    return Restored(state=state, config=config, step=step, directory=directory)


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
