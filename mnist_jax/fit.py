"""The training loop: epochs of jitted steps, live progress, metrics, plots, checkpoints.

This is the impure shell around the pure functions in `train.py`; everything it decides
from randomness derives from `config.train.seed` with `fold_in`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from mnist_jax import checkpoint
from mnist_jax import config as config_lib
from mnist_jax.config import Config
from mnist_jax.dataset import Split, Splits
from mnist_jax.errors import UserError
from mnist_jax.plots import plot_history
from mnist_jax.train import create_train_state, evaluate, steps_per_epoch, train_step

LOG_EVERY = 25  # steps between progress-bar refreshes (each one waits for the device)


def run_keys(seed: int) -> dict[str, jax.Array]:
    """Returns the run's independent keys ("init", "dropout", "order") derived from `seed`."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, index) for index, name in enumerate(("init", "dropout", "order"))}


def epoch_order(order_key: jax.Array, epoch: int, size: int) -> np.ndarray:
    """Returns the shuffled example indices (size,) for `epoch`: a function of (seed, epoch)."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(order_key, epoch), size))


def train_and_evaluate(config: Config, workdir: Path, data: Splits, log: Callable[[str], None] = print) -> dict:
    """Trains `config` on `data`, writing everything to `workdir`; returns the run summary.

    workdir receives config.json, metrics.jsonl (one line per epoch), accuracy.png and
    loss.png (refreshed every epoch), checkpoints/ (latest few and best by validation
    accuracy) and summary.json with the test accuracy of the best checkpoint.
    """
    started = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config_lib.to_dict(config), indent=2) + "\n")
    batch_size, steps = config.train.batch_size, steps_per_epoch(config)
    keys = run_keys(config.train.seed)
    state = create_train_state(config, keys["init"])
    parameter_count = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    log(f"model: {parameter_count:,} parameters; {len(data.train.labels):,} training, "
        f"{len(data.validation.labels):,} validation images; device {jax.devices()[0].platform}")

    history: list[dict] = []
    manager = checkpoint.open_manager(workdir / checkpoint.CHECKPOINTS, keep=config.train.keep_checkpoints)
    try:
        for epoch in range(1, config.train.epochs + 1):
            order = epoch_order(keys["order"], epoch, len(data.train.labels))[: steps * batch_size]
            state, train_metrics = _train_epoch(state, data.train, order, batch_size, keys["dropout"], epoch, config)
            val = evaluate(state, data.validation.images, data.validation.labels, config.train.eval_batch_size)
            record = {"epoch": epoch, "step": int(state.step), **train_metrics,
                      "val_loss": val["loss"], "val_accuracy": val["accuracy"], "time": time.time()}
            history.append(record)
            with open(workdir / "metrics.jsonl", "a") as metrics_file:
                metrics_file.write(json.dumps(record) + "\n")
            plot_history(history, workdir)
            checkpoint.save(manager, state, config, {"val_accuracy": val["accuracy"], "val_loss": val["loss"]})
            log(f"epoch {epoch}/{config.train.epochs}  "
                f"train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:.2f}%  "
                f"val loss {val['loss']:.4f} acc {100 * val['accuracy']:.2f}%  "
                f"{record['images_per_second']:,.0f} img/s")
        manager.wait_until_finished()
    finally:
        manager.close()  # waits for a save in flight, so a stopped run keeps complete checkpoints

    best = checkpoint.restore(workdir, "best")
    test = evaluate(best.state, data.test.images, data.test.labels, config.train.eval_batch_size)
    best_record = next(r for r in history if r["step"] == best.step)
    summary = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_epoch": best_record["epoch"],
        "best_step": best.step,
        "best_val_accuracy": best_record["val_accuracy"],
        "epochs": config.train.epochs,
        "parameters": parameter_count,
        "train_seconds": sum(r["train_seconds"] for r in history),
        "total_seconds": time.perf_counter() - started,
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _train_epoch(state, split: Split, order: np.ndarray, batch_size: int, dropout_key: jax.Array,
                 epoch: int, config: Config):
    """Runs one epoch of `train_step` with a live progress bar; returns (state, epoch metrics)."""
    steps = len(order) // batch_size
    loss_sum = correct_sum = 0.0
    seen = 0
    pending = []
    first_step_seconds = 0.0
    started = time.perf_counter()
    with tqdm(total=steps, desc=f"epoch {epoch}/{config.train.epochs}", unit="step", leave=False,
              dynamic_ncols=True, disable=None) as bar:
        for index in range(steps):
            rows = order[index * batch_size : (index + 1) * batch_size]
            state, metrics = train_step(state, {"image": split.images[rows], "label": split.labels[rows]}, dropout_key)
            pending.append(metrics)
            if index == 0:
                jax.block_until_ready(metrics)  # time the first step (and its compile) on its own
                first_step_seconds = time.perf_counter() - started
            if len(pending) == LOG_EVERY or index == steps - 1:
                fetched = jax.device_get(pending)
                losses = np.array([m["loss"] for m in fetched])
                if not np.all(np.isfinite(losses)):
                    raise UserError(f"training loss became {losses[~np.isfinite(losses)][0]} near step "
                                    f"{int(state.step)}; lower train.learning_rate")
                loss_sum += losses.sum() * batch_size
                correct_sum += sum(m["accuracy"] for m in fetched) * batch_size
                seen += len(fetched) * batch_size
                bar.update(len(fetched))
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct_sum / seen:.2f}%")
                pending = []
    seconds = time.perf_counter() - started
    steady = seconds - first_step_seconds
    return state, {
        "train_loss": float(loss_sum / seen),
        "train_accuracy": float(correct_sum / seen),
        "train_seconds": seconds,
        "images_per_second": (steps - 1) * batch_size / steady if steps > 1 and steady > 0 else math.nan,
    }
