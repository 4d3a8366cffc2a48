"""The training loop: segments of steps, live progress, metrics, plots, checkpoints, resume.

This is the impure shell around the pure functions in `step.py` and the loop forms in
`loops.py`. Everything random derives from `config.train.seed` with `fold_in`, and every
checkpoint holds what the loop needs to go on, so a run stopped at any step (even by SIGKILL)
and resumed ends with the same parameters as a run that was never stopped.
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

from mnist_jax.config import Config
from mnist_jax.data.dataset import Splits
from mnist_jax.errors import DamagedCheckpoint, Diverged
from mnist_jax.evaluation.plots import plot_history, preload
from mnist_jax.run_dir import RunDir, saved_steps
from mnist_jax.training import checkpoint, parallel
from mnist_jax.training.loops import make_loop, run_keys, segment_length
from mnist_jax.training.step import all_finite, create_train_state, evaluate, steps_per_epoch
from mnist_jax.training.teachers import teaching

PLOT_INTERVAL = 10.0  # s: epochs shorter than this redraw the plots at most this often (drawing costs 0.4 s)


class Stopped(Exception):
    """Training stopped on request after writing a checkpoint of `step`."""

    def __init__(self, step: int, steps_in_epoch: int):
        super().__init__(f"stopped at step {step}")
        self.step, self.steps_in_epoch = step, steps_in_epoch


def train_and_evaluate(config: Config, workdir: Path, data: Splits, log: Callable[[str], None] = print,
                       should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Trains `config` on `data` in `workdir`, resuming from its latest checkpoint; returns the summary.

    workdir receives config.json, metrics.jsonl (one line per epoch), accuracy.png and
    loss.png (refreshed every epoch), checkpoints/ (latest few, the best by validation
    accuracy, and every `train.checkpoint_every` steps) and summary.json with the test
    accuracy of the best checkpoint. `should_stop` is polled between segments of steps;
    when it says so, a checkpoint is written and `Stopped` is raised.
    """
    started = time.perf_counter()
    workdir = Path(workdir)
    run = RunDir(workdir)
    lead = parallel.is_lead()  # only process 0 logs and writes files; every process saves checkpoints
    log = log if lead else (lambda line: None)
    if lead:
        preload()  # the plots' library loads while the steps compile and run
    mesh = parallel.data_mesh()
    parallel.check_divisible(config, mesh)
    replicated = parallel.replicated(mesh)
    teachers = teaching(config, workdir, data.train, keep=lead, log=log)
    if lead:
        run.write_config(config)
    steps_in_epoch, total_steps = steps_per_epoch(config), config.train.epochs * steps_per_epoch(config)
    keys = jax.jit(run_keys, out_shardings=replicated)(config.train.seed)
    manager = checkpoint.open_manager(run.checkpoints, keep=config.train.keep_checkpoints)
    try:
        state, progress = _start(config, run, keys, replicated, log)
        history = _read_history(run, int(progress["step"]), rewrite=lead)
        loop = make_loop(config, data.train, keys, mesh, **teachers)
        step = int(progress.pop("step"))
        parameter_count = sum(leaf.size for leaf in jax.tree.leaves(state.params))
        log(f"model: {parameter_count:,} parameters; {len(data.train.labels):,} training, "
            f"{len(data.validation.labels):,} validation images; {type(loop).__name__} on "
            f"{jax.device_count()} {jax.devices()[0].platform} device(s), {jax.process_count()} process(es)")
        bar, compiled, plotted = None, False, -math.inf
        while step < total_steps:
            epoch = step // steps_in_epoch + 1
            if bar is None:
                bar = _progress_bar(epoch, config.train.epochs, steps_in_epoch, step % steps_in_epoch, lead)
            count = segment_length(step, steps_in_epoch, config.train.checkpoint_every, loop.limit)
            segment_started = time.perf_counter()
            state, metrics = loop.run(state, step, count)
            metrics = parallel.to_host(metrics)
            _check_finite(metrics["loss"], step, manager, run)
            step += count
            # The process's first segment includes compiling: keep it out of images/s.
            _accumulate(progress, metrics, config.train.batch_size, time.perf_counter() - segment_started, compiled)
            compiled = True
            bar.update(count)
            bar.set_postfix(loss=f"{progress['loss_sum'] / progress['seen']:.4f}",
                            acc=f"{100 * progress['correct_sum'] / progress['seen']:.2f}%")
            if step % steps_in_epoch == 0:
                bar.close()
                bar = None
                record = _end_epoch(config, run, state, step, data, progress, history, replicated)
                if lead and (step == total_steps or time.perf_counter() - plotted >= PLOT_INTERVAL):
                    plot_history(history, run.path)
                    plotted = time.perf_counter()
                metrics = {name: record[name] for name in ("val_accuracy", "val_loss", "val_temperature")}
                _save(manager, step, state, config, metrics, {}, run)
                log(_epoch_line(record, config.train.epochs))
                progress = _new_progress()
            elif config.train.checkpoint_every and step % config.train.checkpoint_every == 0:
                _save(manager, step, state, config, None, progress, run)
            if should_stop() and step < total_steps:
                if int(manager.latest_step() or -1) != step:
                    _save(manager, step, state, config, None, progress, run)
                if lead and history:
                    plot_history(history, run.path)
                raise Stopped(step, steps_in_epoch)
    finally:
        checkpoint.finish(manager)  # waits for a save in flight, so a stopped run keeps complete checkpoints
    # The best checkpoint is most often the last step's state, still in memory: no need to read it back.
    final = (state, step) if manager.best_step() == step else None
    return _final_test(config, run, data, history, started, parameter_count, lead, final, replicated)


def _start(config: Config, run: RunDir, keys: dict, sharding, log: Callable[[str], None]):
    """Returns (state, epoch progress with its "step"): restored from the latest checkpoint, or fresh.

    Raises DamagedCheckpoint for an unreadable latest step, with `newest_intact` the newest older
    step that restores (None: none does).
    """
    steps = saved_steps(run.checkpoints)
    if not steps:
        state = jax.jit(create_train_state, static_argnums=0, out_shardings=sharding)(config, keys["init"])
        return state, {**_new_progress(), "step": 0}
    try:
        state, progress = checkpoint.restore_for_resume(run.checkpoints, steps[-1], config, sharding)
    except DamagedCheckpoint as damaged:
        damaged.searched, damaged.newest_intact = True, _newest_intact(run, steps[:-1], config)
        raise
    log(f"resuming {run.path} from step {steps[-1]}")
    return state, {**_new_progress(), **progress, "step": steps[-1]}


def _newest_intact(run: RunDir, older: list[int], config: Config) -> int | None:
    """Returns the newest of the `older` steps that restores, None if none does."""
    for step in reversed(older):
        try:
            checkpoint.restore_for_resume(run.checkpoints, step, config)
        except DamagedCheckpoint:
            continue
        return step
    return None


def _read_history(run: RunDir, step: int, rewrite: bool) -> list[dict]:
    """Returns the epoch records up to `step`; with `rewrite`, drops any later ones from metrics.jsonl."""
    history = [record for record in run.read_metrics() if record["step"] <= step]
    if rewrite and run.metrics.exists():
        run.metrics.write_text("".join(json.dumps(record) + "\n" for record in history))
    return history


def _new_progress() -> dict[str, float]:
    return {"loss_sum": 0.0, "correct_sum": 0.0, "seen": 0, "seconds": 0.0, "steady_seconds": 0.0, "steady_seen": 0}


def _accumulate(progress: dict, metrics: dict, batch_size: int, seconds: float, steady: bool) -> None:
    """Adds one segment's per-step metrics and time to the epoch's running sums (in place)."""
    count = len(metrics["loss"]) * batch_size
    if steady:
        progress["steady_seconds"] += seconds
        progress["steady_seen"] += count
    progress["loss_sum"] += float(np.sum(metrics["loss"])) * batch_size
    progress["correct_sum"] += float(np.sum(metrics["accuracy"])) * batch_size
    progress["seen"] += count
    progress["seconds"] += seconds


def _check_finite(losses: np.ndarray, first_step: int, manager, run: RunDir) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        _diverged(f"training loss became {losses[bad[0]]} at step {first_step + bad[0] + 1}", manager, run)


def _save(manager, step: int, state, config: Config, metrics: dict | None, progress: dict, run: RunDir) -> None:
    """Saves a checkpoint, unless the parameters are no longer finite (then the run stops)."""
    if not parallel.to_host(all_finite(state.params)):
        _diverged(f"the parameters became non-finite by step {step}", manager, run)
    checkpoint.save(manager, step, state, config, metrics, progress)


def _diverged(what: str, manager, run: RunDir):
    manager.wait_until_finished()  # a save still in flight is a good checkpoint too: name the newest
    steps = saved_steps(run.checkpoints)
    raise Diverged(what, run.path, steps[-1] if steps else None)


def _progress_bar(epoch: int, epochs: int, steps_in_epoch: int, done: int, lead: bool) -> tqdm:
    return tqdm(total=steps_in_epoch, initial=done, desc=f"epoch {epoch}/{epochs}", unit="step", leave=False,
                dynamic_ncols=True, disable=None if lead else True)


def _end_epoch(config: Config, run: RunDir, state, step: int, data: Splits, progress: dict,
               history: list[dict], sharding) -> dict:
    """Evaluates on validation; process 0 appends the epoch's record to metrics.jsonl."""
    val = evaluate(state, data.validation.images, data.validation.labels, config.train.eval_batch_size,
                   parallel.batch_sharding(sharding.mesh))
    record = {
        "epoch": step // steps_per_epoch(config),
        "step": step,
        "train_loss": progress["loss_sum"] / progress["seen"],
        "train_accuracy": progress["correct_sum"] / progress["seen"],
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_temperature": val["temperature"],
        "train_seconds": progress["seconds"],
        "images_per_second": (progress["steady_seen"] / progress["steady_seconds"]
                              if progress["steady_seconds"] > 0 else math.nan),
        "time": time.time(),
    }
    history.append(record)
    if parallel.is_lead():
        with open(run.metrics, "a") as metrics_file:
            metrics_file.write(json.dumps(record) + "\n")
    return record


def _epoch_line(record: dict, epochs: int) -> str:
    return (f"epoch {record['epoch']}/{epochs}  "
            f"train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:.2f}%  "
            f"val loss {record['val_loss']:.4f} acc {100 * record['val_accuracy']:.2f}%  "
            f"{record['images_per_second']:,.0f} img/s")


def _final_test(config: Config, run: RunDir, data: Splits, history: list[dict], started: float,
                parameter_count: int, lead: bool, final: tuple | None, sharding) -> dict:
    """Tests the checkpoint with the best validation accuracy: `final` (state, step) when that is the state
    in memory (split over the mesh as in training), else restored (each process on its own first device);
    process 0 writes summary.json. Returns the summary."""
    if final is not None:
        state, step = final
        test = evaluate(state, data.test.images, data.test.labels, config.train.eval_batch_size,
                        parallel.batch_sharding(sharding.mesh))
        best_record = next(r for r in history if r["step"] == step)
        best_step, temperature = step, best_record["val_temperature"]
    else:
        best = checkpoint.restore(run.path, "best")
        test = evaluate(best.state, data.test.images, data.test.labels, config.train.eval_batch_size)
        best_record = next(r for r in history if r["step"] == best.step)
        best_step, temperature = best.step, best.temperature
    summary = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_epoch": best_record["epoch"],
        "best_step": best_step,
        "best_val_accuracy": best_record["val_accuracy"],
        "temperature": temperature,
        "epochs": config.train.epochs,
        "parameters": parameter_count,
        "train_seconds": sum(r["train_seconds"] for r in history),
        "total_seconds": time.perf_counter() - started,
        "device": str(jax.devices()[0].device_kind),
        "jax_version": jax.__version__,
    }
    if lead:
        run.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
