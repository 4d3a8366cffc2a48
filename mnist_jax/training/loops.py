"""Two forms of the training loop behind one interface, chosen by backend.

On XLA:CPU a `lax.scan` over convolution steps runs 10-15x slower than a Python loop over
the same jitted step (jax-ml/jax#12868), so `HostLoop` feeds one batch per step from host
memory. On accelerators `DeviceLoop` keeps the training split on the device as uint8 and runs
a chunk of steps in one compiled call, so the host never feeds batches.

Both run `step.update` on the same batches with the same keys: a run's randomness is a
function of (seed, epoch, step) whichever form runs it, and training can stop and resume at
any step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.config import Config
from mnist_jax.data.dataset import Split
from mnist_jax.training import parallel
from mnist_jax.training.step import PLAIN, StepOptions, TrainState, steps_per_epoch, train_step, update

# Host loop: steps between fetches of the metrics (each waits for the device). Fewer than XLA:CPU's 32
# computations in flight per device: past them, with several CPU devices, a dispatch waiting for a free
# slot can leave a step launched on one device and not on the other, whose collectives then wait forever.
HOST_SEGMENT = 25


def run_keys(seed: int) -> dict[str, jax.Array]:
    """Returns the run's independent keys ("init", "dropout", "order") derived from `seed`."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, index) for index, name in enumerate(("init", "dropout", "order"))}


@functools.partial(jax.jit, static_argnames="size")
def epoch_order(order_key: jax.Array, epoch: int | jax.Array, size: int) -> jax.Array:
    """Returns the shuffled example indices (size,) of `epoch` (counted from 1): a function of (seed, epoch)."""
    return jax.random.permutation(jax.random.fold_in(order_key, epoch), size)


def segment_length(step, steps_in_epoch: int, checkpoint_every: int, limit: int, minimum: Callable = min):
    """Returns how many steps to run from global `step` before the loop must stop and look.

    A segment never crosses an epoch end or a multiple of `checkpoint_every` (0: none) and
    is at most `limit` long. Works on Python ints, or on traced ints with `minimum=jnp.minimum`.
    """
    length = minimum(limit, steps_in_epoch - step % steps_in_epoch)
    if checkpoint_every:
        length = minimum(length, checkpoint_every - step % checkpoint_every)
    return length


def resolve_loop(config: Config) -> str:
    """Returns "host" or "device": the configured form, or for "auto" the one that fits the backend."""
    if config.train.loop != "auto":
        return config.train.loop
    return "host" if jax.default_backend() == "cpu" or jax.process_count() > 1 else "device"


class HostLoop:
    """A Python loop over the jitted `train_step`; the host gathers each batch and puts it on the devices.

    With several processes, each gathers and puts only its share of every global batch.
    """

    def __init__(self, config: Config, split: Split, keys: dict[str, jax.Array], mesh: jax.sharding.Mesh,
                 teacher_targets: np.ndarray | None = None, teachers: tuple[TrainState, ...] = ()):
        self.limit = HOST_SEGMENT
        self._examples, self._keys = _examples(split, teacher_targets), keys
        self._batch_sharding, self._replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
        self._teachers = _replicate(teachers, self._replicated)
        self._batch_size, self._steps = config.train.batch_size, steps_per_epoch(config)
        self._options = StepOptions.of(config, mesh)
        self._order_epoch, self._order = None, None

    def run(self, state: TrainState, step: int, count: int) -> tuple[TrainState, dict[str, jax.Array]]:
        """Runs `count` steps from global `step` (= state.step); returns the state and metrics (count,)."""
        epoch, position = step // self._steps + 1, step % self._steps
        if self._order_epoch != epoch:
            epoch_on_device = jax.device_put(np.int32(epoch), self._replicated)
            self._order = parallel.to_host(epoch_order(self._keys["order"], epoch_on_device,
                                                       len(self._examples["label"])))
            self._order_epoch = epoch
        metrics = []
        for index in range(position, position + count):
            rows = parallel.local_share(self._order[index * self._batch_size : (index + 1) * self._batch_size])
            batch = {name: values[rows] for name, values in self._examples.items()}
            state, step_metrics = train_step(state, parallel.global_batch(batch, self._batch_sharding),
                                             self._keys["dropout"], self._options, self._teachers)
            metrics.append(step_metrics)
        return state, jax.tree.map(lambda *values: jnp.stack(values), *metrics)


class DeviceLoop:
    """The train split lives on the devices; each call runs up to `chunk_steps` steps in one `lax.scan`."""

    def __init__(self, config: Config, split: Split, keys: dict[str, jax.Array], mesh: jax.sharding.Mesh,
                 teacher_targets: np.ndarray | None = None, teachers: tuple[TrainState, ...] = ()):
        self.limit = config.train.chunk_steps
        self._examples = jax.device_put(_examples(split, teacher_targets), parallel.replicated(mesh))
        self._teachers = _replicate(teachers, parallel.replicated(mesh))
        self._keys = keys
        self._chunk = functools.partial(
            train_chunk, steps_in_epoch=steps_per_epoch(config), batch_size=config.train.batch_size,
            checkpoint_every=config.train.checkpoint_every, chunk_steps=config.train.chunk_steps,
            batch_sharding=parallel.batch_sharding(mesh), options=StepOptions.of(config, mesh),
        )

    def run(self, state: TrainState, step: int, count: int) -> tuple[TrainState, dict[str, jax.Array]]:
        """Runs `count` steps from global `step`; the device works out the same count from state.step."""
        state, metrics = self._chunk(state, self._examples, self._keys["order"], self._keys["dropout"],
                                     self._teachers)
        return state, jax.tree.map(lambda values: values[:count], metrics)


@functools.partial(jax.jit, donate_argnums=0,
                   static_argnames=("steps_in_epoch", "batch_size", "checkpoint_every", "chunk_steps",
                                    "batch_sharding", "options"))
def train_chunk(state: TrainState, examples: dict[str, jax.Array], order_key: jax.Array,
                dropout_key: jax.Array, teachers: tuple[TrainState, ...] = (), *, steps_in_epoch: int,
                batch_size: int, checkpoint_every: int, chunk_steps: int, batch_sharding=None,
                options: StepOptions = PLAIN) -> tuple[TrainState, dict[str, jax.Array]]:
    """Runs the next segment of training (see `segment_length`) from state.step, all on the device.

    examples: the whole train split as batch fields of N rows (see `_examples`); teachers: as in
    `step.update`. Returns the
    state and per-step metrics (chunk_steps,); entries past the segment's end are zeros and
    the steps they stand for were not taken.
    """
    first = state.step
    count = segment_length(first, steps_in_epoch, checkpoint_every, chunk_steps, minimum=jnp.minimum)
    order = epoch_order(order_key, first // steps_in_epoch + 1, len(examples["label"]))
    order = order[: steps_in_epoch * batch_size].reshape(steps_in_epoch, batch_size)
    no_metrics = {"loss": jnp.zeros((), jnp.float32), "accuracy": jnp.zeros((), jnp.float32)}

    def step(state, index):
        rows = order[jnp.minimum(first % steps_in_epoch + index, steps_in_epoch - 1)]
        batch = {name: values[rows] for name, values in examples.items()}
        if batch_sharding is not None:  # split each batch over the devices, as the host loop does
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return jax.lax.cond(index < count, lambda s: update(s, batch, dropout_key, options, teachers),
                            lambda s: (s, no_metrics), state)

    return jax.lax.scan(step, state, jnp.arange(chunk_steps))


def make_loop(config: Config, split: Split, keys: dict[str, jax.Array], mesh: jax.sharding.Mesh,
              teacher_targets: np.ndarray | None = None, teachers: tuple[TrainState, ...] = ()):
    """Returns the HostLoop or DeviceLoop that `config.train.loop` and the backend call for.

    A distilled run gives either `teacher_targets`, float32 (N, C), the teachers' probabilities for the
    split's clean images, or `teachers`, their trained states, which label each augmented batch.
    """
    loop = DeviceLoop if resolve_loop(config) == "device" else HostLoop
    return loop(config, split, keys, mesh, teacher_targets, teachers)


def _examples(split: Split, teacher_targets: np.ndarray | None) -> dict[str, np.ndarray]:
    """Returns the split as train-batch fields of N rows: "image", "label" and, when given, "teacher"."""
    examples = {"image": split.images, "label": split.labels}
    if teacher_targets is not None:
        examples["teacher"] = teacher_targets
    return examples


def _replicate(teachers: tuple[TrainState, ...], sharding: jax.sharding.NamedSharding) -> tuple[TrainState, ...]:
    """Returns the teachers' states on every device of `sharding`, by way of the host: each process
    restored them onto its own device, which a sharding over several processes cannot take as is."""
    return jax.device_put(jax.device_get(teachers), sharding)
