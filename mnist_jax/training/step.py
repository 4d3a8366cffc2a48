"""Pure training functions: optimizer, train state, loss, one jitted train step and eval step.

Nothing here does I/O or keeps global state; randomness comes in as keys. A batch is a dict
with "image" uint8 (B, 28, 28, 1) and "label" int32 (B,); train batches of a distilled run
also carry "teacher" float32 (B, C), eval batches "mask" float32 (B,) marking the real (not
padding) rows.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec

from mnist_jax.config import AugmentConfig, Config, TrainConfig
from mnist_jax.data.augment import augment as augment_images
from mnist_jax.model.networks import create_model, init_variables
from mnist_jax.model.temperature import fit_temperature, nll_by_temperature
from mnist_jax.training import parallel


def scale_images(images: jax.Array) -> jax.Array:
    """Maps uint8 pixels (..., 28, 28, 1) to float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def steps_per_epoch(config: Config) -> int:
    """Returns the number of full training batches in one epoch (the last partial one is dropped)."""
    return config.data.train_images // config.train.batch_size


def learning_rate_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """Returns step -> learning rate for the configured schedule over `total_steps`."""
    if config.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, config.learning_rate, pct_start=0.25)
    if config.schedule == "cosine":
        warmup = max(1, total_steps // 20)
        return optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(total_steps, warmup + 1))
    return optax.constant_schedule(config.learning_rate)


def create_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Returns the configured optax optimizer with its learning-rate schedule."""
    schedule = learning_rate_schedule(config, total_steps)
    if config.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(schedule, momentum=config.momentum, nesterov=True),
        )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def ema_update(average: Any, params: Any, decay: float) -> Any:
    """Returns decay * average + (1 - decay) * params, leaf by leaf (two pytrees of one structure)."""
    return jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, average, params)


class TrainState(train_state.TrainState):
    """flax's TrainState plus BatchNorm running statistics and an EMA of the params.

    batch_stats: the model's "batch_stats" collection ({} for models without BatchNorm).
    ema_params: the moving average of params, updated after every step ({} when `ema_decay` is 0).
        Step t (counted from 0) uses decay min(ema_decay, (1 + t) / (10 + t)), as TensorFlow's
        ExponentialMovingAverage does, so the average forgets the random initial weights within
        the first epoch instead of after thousands of steps.
    """

    batch_stats: Any
    ema_params: Any
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    def apply_gradients(self, *, grads, **changes) -> TrainState:
        """Takes one optimizer step (see flax); then moves the EMA towards the new params."""
        state = super().apply_gradients(grads=grads, **changes)
        if not self.ema_decay:
            return state
        decay = jnp.minimum(self.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        return state.replace(ema_params=ema_update(self.ema_params, state.params, decay))


@functools.partial(jax.jit, static_argnums=0)
def create_train_state(config: Config, rng: jax.Array) -> TrainState:
    """Returns a fresh TrainState (step 0, initialised variables, optimizer state) for `config`.

    Jitted once per config: every state of a config then shares one model and optimizer, so the steps
    compiled for one state serve the next (and init's many small ops do not each compile eagerly).
    """
    model = create_model(config.model, config.data.spec.num_classes)
    total_steps = config.train.epochs * steps_per_epoch(config)
    variables = init_variables(model, rng)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=create_optimizer(config.train, total_steps),
        batch_stats=variables.get("batch_stats", {}),
        ema_params=jax.tree.map(jnp.copy, variables["params"]) if config.train.ema else {},  # own buffers: donated
        ema_decay=config.train.ema,
    )
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array, not a Python int: one trace for every step


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every value of every array in `tree` is finite: a bool scalar, in one compiled program (a
    check leaf by leaf compiles one per shape)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def inference_variables(state: TrainState) -> dict:
    """Returns the variables that evaluate and predict apply: the EMA params when the run keeps them,
    else the trained params, with the BatchNorm running statistics if the model has any."""
    variables = {"params": state.ema_params if state.ema_params else state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


def inference_logits(state: TrainState, images: jax.Array) -> jax.Array:
    """Returns the logits (B, C) of `inference_variables(state)` for float images (B, 28, 28, 1) in [0, 1]."""
    return state.apply_fn(inference_variables(state), images, train=False)


def mean_softmax(states: tuple[TrainState, ...], images: jax.Array) -> jax.Array:
    """Returns the mean over `states` of their softmax probabilities (B, C) for float images (B, 28, 28, 1)."""
    return jnp.mean(jnp.stack([jax.nn.softmax(inference_logits(state, images)) for state in states]), axis=0)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0,
                       teacher: jax.Array | None = None, distillation: float = 0.0) -> jax.Array:
    """Returns the per-example softmax cross-entropy (B,) of logits (B, C) and int labels (B,).

    With `label_smoothing` s > 0 the target is (1 - s) * one_hot + s / 10 (Szegedy et al. 2016).
    With `distillation` d > 0 it becomes (1 - d) * that + d * teacher, `teacher` (B, C) being the
    probabilities a teacher ensemble gives the same images (knowledge distillation, Hinton et al. 2015).
    """
    if not label_smoothing and not distillation:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    if distillation:
        if teacher is None:
            raise ValueError("distillation needs the teachers' probabilities: a batch with a 'teacher' field")
        targets = (1.0 - distillation) * targets + distillation * teacher
    return optax.softmax_cross_entropy(logits, targets)


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The train step's static options: one compiled step per distinct value (hashable, frozen)."""

    augment: AugmentConfig | None = None  # distortions applied to the batch on the device first (None: none)
    label_smoothing: float = 0.0  # see `cross_entropy_loss`
    distillation: float = 0.0  # see `cross_entropy_loss`
    # A mesh whose devices each take their share of the batch through the model alone, then average the
    # gradients, BatchNorm statistics and metrics in one all-reduce (see `parallel.rows_are_independent`);
    # None: the compiler partitions the whole step over the batch's sharding, collectives where it needs them.
    per_device: jax.sharding.Mesh | None = None

    @classmethod
    def of(cls, config: Config, mesh: jax.sharding.Mesh | None = None) -> StepOptions:
        """The options `config` trains with on `mesh` (None: whatever devices the batch is on)."""
        per_device = mesh if mesh is not None and parallel.rows_are_independent(config, mesh.devices.size) else None
        return cls(config.augment, config.train.label_smoothing, config.train.distillation, per_device)


PLAIN = StepOptions()  # no augmentation, hard targets


def gradients(state: TrainState, images: jax.Array, batch: dict, dropout_rng: jax.Array, options: StepOptions = PLAIN,
              axis_name: str | None = None) -> tuple[Any, Any, dict]:
    """Returns the loss's gradients (a pytree like state.params), the new BatchNorm statistics and
    {"loss", "accuracy"} (scalars) for float images (B, 28, 28, 1) and batch["label"] (B,) (and "teacher" (B, C)).

    With `axis_name` (inside a shard_map over that axis) every device holds B rows of its own, and the
    three results are averaged over the devices in one all-reduce of one flat vector: XLA:CPU's all-reduce
    of one buffer costs far less than the same values as a tuple of the parameters' arrays.
    """

    def loss_fn(params):
        if state.batch_stats:
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, images,
                                             train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
        else:
            logits = state.apply_fn({"params": params}, images, train=True, rngs={"dropout": dropout_rng})
            updates = {"batch_stats": {}}
        loss = cross_entropy_loss(logits, batch["label"], options.label_smoothing, batch.get("teacher"),
                                  options.distillation).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    results = grads, batch_stats, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
    if axis_name is None:
        return results
    flat, unflatten = ravel_pytree(results)
    return unflatten(jax.lax.pmean(flat, axis_name))


def update(state: TrainState, batch: dict, rng: jax.Array, options: StepOptions = PLAIN,
           teachers: tuple[TrainState, ...] = ()) -> tuple[TrainState, dict]:
    """Takes one optimizer step on `batch`; returns the new state and {"loss", "accuracy"} (scalars).

    Dropout's key is `fold_in(rng, state.step)` and augmentation's is derived from it, so a
    run is a function of its seed, drawn for the whole batch whatever devices it is split over.
    `options` (static) says how the batch is distorted, how soft the targets are: towards
    batch["teacher"] (B, C) (see `cross_entropy_loss`), or, when `teachers` (trained states) are
    given, towards their mean softmax on the distorted images the student sees, and whether each
    device computes its gradients alone (`StepOptions.per_device`). BatchNorm normalises by the batch
    (or its groups) and its running statistics advance. This is the body every loop form runs;
    `train_step` is its jitted, donating version.
    """
    dropout_rng = jax.random.fold_in(rng, state.step)
    images = scale_images(batch["image"])
    if options.augment is not None and options.augment.enabled:
        images = augment_images(images, jax.random.fold_in(dropout_rng, 1), options.augment)
    if teachers:
        batch = {**batch, "teacher": mean_softmax(teachers, images)}
    batch = {name: values for name, values in batch.items() if name != "image"}
    if options.per_device is None:
        grads, batch_stats, metrics = gradients(state, images, batch, dropout_rng, options)
    else:
        rows, whole = PartitionSpec(parallel.DATA_AXIS), PartitionSpec()
        # check_vma=False: with it, the gradient of each replicated BatchNorm scale gets an all-reduce of its
        # own mid-backward, besides the one `gradients` makes (the results are the same).
        per_device = jax.shard_map(functools.partial(gradients, options=options, axis_name=parallel.DATA_AXIS),
                                   mesh=options.per_device, in_specs=(whole, rows, rows, whole), out_specs=whole,
                                   check_vma=False)
        grads, batch_stats, metrics = per_device(state, images, batch, dropout_rng)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics


# The input state is donated: do not use it after the call.
train_step = jax.jit(update, donate_argnums=0, static_argnames="options")


@jax.jit
def eval_step(state: TrainState, batch: dict) -> dict:
    """Returns sums over the real rows of `batch`: {"loss", "correct", "count"} (scalars) and
    "nll_by_temperature" (K,), the loss at each candidate temperature of `temperature.TEMPERATURES`.

    Uses `inference_variables` (EMA params when kept, BatchNorm running statistics); the loss
    is the plain cross-entropy, without label smoothing.
    """
    logits = inference_logits(state, scale_images(batch["image"]))
    mask = batch["mask"]
    return {
        "loss": jnp.sum(cross_entropy_loss(logits, batch["label"]) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
        "count": jnp.sum(mask),
        "nll_by_temperature": jnp.sum(nll_by_temperature(logits, batch["label"]) * mask[:, None], axis=0),
    }


def evaluate(state: TrainState, images: np.ndarray, labels: np.ndarray, batch_size: int,
             sharding: jax.sharding.NamedSharding | None = None) -> dict[str, float]:
    """Returns mean {"loss", "accuracy"} over all images (N, 28, 28, 1), in fixed-size batches, and the
    "temperature" that would calibrate the probabilities on them (see `temperature.fit_temperature`).

    The last batch is padded (and masked) so `eval_step` compiles once. With `sharding`, each
    batch is split over its mesh, each process putting only its share.
    """
    totals = None
    for batch in padded_batches(images, batch_size, labels=labels):
        if sharding is None:
            batch = jax.device_put(batch)  # explicit: no implicit transfers (see jax.transfer_guard)
        else:
            batch = parallel.global_batch({name: parallel.local_share(rows) for name, rows in batch.items()}, sharding)
        sums = eval_step(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = parallel.to_host(totals)
    return {"loss": float(totals["loss"] / totals["count"]), "accuracy": float(totals["correct"] / totals["count"]),
            "temperature": fit_temperature(totals["nll_by_temperature"])}


def padded_batches(images: np.ndarray, batch_size: int, labels: np.ndarray | None = None):
    """Yields dicts of "image", "mask" (and "label") with exactly `batch_size` rows each.

    The last batch is zero-padded; "mask" is 1.0 for real rows and 0.0 for padding.
    """
    for start in range(0, len(images), batch_size):
        count = min(batch_size, len(images) - start)
        pad = batch_size - count
        batch = {
            "image": np.pad(images[start : start + count], ((0, pad), (0, 0), (0, 0), (0, 0))),
            "mask": np.arange(batch_size) < count,
        }
        batch["mask"] = batch["mask"].astype(np.float32)
        if labels is not None:
            batch["label"] = np.pad(labels[start : start + count], (0, pad))
        yield batch
