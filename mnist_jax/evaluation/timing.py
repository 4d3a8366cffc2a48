"""Speed figures: time to a target accuracy, training and evaluation throughput, predict latency, memory.

Whole-process figures come from running the real `bin/train` / `bin/predict` entry points as
subprocesses; throughput figures call the pure API (`create_train_state`, `train_step`,
`evaluate`) in this process. Every figure is summarised as the median, min and max of repeats.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from mnist_jax.compilation_cache import COMPILATION_CACHE_VARIABLE
from mnist_jax.config import Config, from_dict, to_dict
from mnist_jax.data.dataset import Split
from mnist_jax.evaluation.figures import cpu_name, predict_processes, spread
from mnist_jax.run_dir import RunDir
from mnist_jax.training import parallel
from mnist_jax.training.loops import HOST_SEGMENT
from mnist_jax.training.step import StepOptions, create_train_state, evaluate, train_step


@dataclasses.dataclass(frozen=True)
class TrainRun:
    started: float  # unix seconds just before the process was started
    seconds: float  # the whole process, wall clock
    cpu_seconds: float  # the process's user + system CPU time: over `seconds`, the cores it kept busy
    peak_rss_bytes: int
    records: list[dict]  # metrics.jsonl: one per epoch, with "val_accuracy", "train_seconds", "time"
    summary: dict  # summary.json
    workdir: Path


def run_train(flags: dict[str, str], data_dir: Path, workdir: Path, cache_dir: Path,
              source: Path | None = None) -> TrainRun:
    """Runs `bin/train` (its Python entry point) once with `flags` ({"preset": "fast", "train.epochs": "1"}
    for --preset fast --train.epochs 1); returns its timings, memory and metrics.

    `cache_dir` is the process's persistent compilation cache; `source`, a checkout whose mnist_jax
    to run instead of this one (another commit's, for a side-by-side comparison). Raises RuntimeError
    with the tail of its output when training fails.
    """
    command = [sys.executable, "-m", "mnist_jax.cli.train", "--workdir", str(workdir), "--data-dir", str(data_dir),
               "--data-source", "prepared", *(item for name, value in flags.items() for item in (f"--{name}", value))]
    env = {**os.environ, COMPILATION_CACHE_VARIABLE: str(cache_dir)}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    log = workdir.parent / f"{workdir.name}.log"
    with open(log, "w") as output:
        started = time.time()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=source)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
        seconds = time.time() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"bin/train exited with {process.returncode}:\n{log.read_text()[-2000:]}")
    run = RunDir(workdir)
    return TrainRun(started, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, run.read_metrics(),
                    run.read_summary(), workdir)


def time_to_target(run: TrainRun, target: float) -> dict[str, float | None]:
    """Returns when `run` first reached `target` accuracy; None where it never did.

    val_from_start: process start to the end of the first epoch whose validation accuracy
    reaches the target; val_training: the training seconds of the epochs up to it (from the
    first step, its compile included; no evaluation, checkpoint or plotting time);
    test_from_start / test_training: the same for the final test of the best checkpoint,
    known only when the process ends.
    """
    index = next((i for i, r in enumerate(run.records) if r["val_accuracy"] >= target), None)
    test_reached = run.summary["test_accuracy"] >= target
    return {
        "val_from_start": None if index is None else run.records[index]["time"] - run.started,
        "val_training": None if index is None else sum(r["train_seconds"] for r in run.records[: index + 1]),
        "test_from_start": run.seconds if test_reached else None,
        "test_training": run.summary["train_seconds"] if test_reached else None,
    }


def train_throughput(config: Config, train: Split, batch_size: int, steps: int, repeats: int) -> dict:
    """Times `train_step` on one batch of real images at `batch_size`, split over this process's devices and
    with the step options (augmentation, targets, per-device form) that bin/train uses there.

    Returns {"compile_seconds": first call minus one steady step, "images_per_second":
    spread(...) over `repeats` timings of `steps` steps each, "devices": how many}.
    """
    config = config.replace(train={"batch_size": batch_size})
    mesh = parallel.data_mesh()
    states = [jax.device_put(create_train_state(config, jax.random.key(0)), parallel.replicated(mesh))]
    batches = [jax.device_put({"image": train.images[:batch_size], "label": train.labels[:batch_size]},
                              parallel.batch_sharding(mesh))]
    return {**_time_steps(states, batches, StepOptions.of(config, mesh), steps, repeats, batch_size),
            "devices": mesh.devices.size}


def devices_alone_throughput(config: Config, train: Split, batch_size: int, steps: int, repeats: int) -> dict:
    """Times every device of this process training a state of its own on its share of a batch of `batch_size`
    rows, none waiting for another: what the devices reach with no collective, so the bound on
    `train_throughput`'s images/s here (the cost of its collectives is the difference). Returns the same.

    BatchNorm groups that do not fit in a share are taken to be the share: statistics need no other device.
    """
    devices = jax.devices()
    share = batch_size // len(devices)
    group = config.model.norm_group if share % max(config.model.norm_group, 1) == 0 else 0
    config = config.replace(train={"batch_size": share}, model={"norm_group": group})
    states = [jax.device_put(create_train_state(config, jax.random.key(0)), device) for device in devices]
    batches = [jax.device_put({"image": train.images[:share], "label": train.labels[:share]}, device)
               for device in devices]
    return {**_time_steps(states, batches, StepOptions.of(config), steps, repeats, share * len(devices)),
            "devices": len(devices)}


def _time_steps(states: list, batches: list[dict], options: StepOptions, steps: int, repeats: int,
                images_per_step: int) -> dict:
    """Steps each state on its batch, all in turn, `steps` times per repeat; returns {"compile_seconds",
    "images_per_second"} as `train_throughput` describes them."""
    key = jax.random.key(1)

    def run(count: int) -> None:
        for index in range(count):
            metrics = []
            for i, batch in enumerate(batches):
                states[i], step_metrics = train_step(states[i], batch, key, options)
                metrics.append(step_metrics)
            if (index + 1) % HOST_SEGMENT == 0 or index + 1 == count:  # as bin/train waits (see HOST_SEGMENT)
                jax.block_until_ready(metrics)

    started = time.perf_counter()
    run(1)
    first_call = time.perf_counter() - started
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(steps)
        rates.append(steps * images_per_step / (time.perf_counter() - started))
    step_seconds = images_per_step / statistics.median(rates)
    return {"compile_seconds": max(first_call - step_seconds, 0.0), "images_per_second": spread(rates)}


def throughput_process(config: Config, data_dir: Path, batch_size: int, steps: int, repeats: int,
                       cores: str | None = None, devices_alone: bool = False) -> dict:
    """`train_throughput` (or with `devices_alone`, `devices_alone_throughput`) in a fresh process with as many
    CPU devices as bin/train would choose there, on every core this process may use, or pinned with taskset
    to `cores` ("0": the first core alone)."""
    request = {"config": to_dict(config), "data_dir": str(data_dir), "batch_size": batch_size, "steps": steps,
               "repeats": repeats, "devices_alone": devices_alone}
    command = [sys.executable, "-m", "mnist_jax.evaluation.timing", json.dumps(request)]
    result = subprocess.run((["taskset", "-c", cores] if cores else []) + command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the train_step timing process failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def _throughput_worker(request: dict) -> dict:
    """The process of `throughput_process`: its CPU devices first, then the timing."""
    from mnist_jax.data import dataset

    config = from_dict(request["config"])
    parallel.use_cpu_devices(parallel.cpu_device_count(config.replace(train={"batch_size": request["batch_size"]}),
                                                        parallel.Cluster(), parallel.usable_cores()))
    spec = config.data.spec
    train = dataset.split(dataset.load(Path(request["data_dir"]), spec=spec), config.data).train
    timing = devices_alone_throughput if request["devices_alone"] else train_throughput
    return timing(config, train, request["batch_size"], request["steps"], request["repeats"])


def eval_throughput(config: Config, split: Split, repeats: int) -> dict:
    """Times `evaluate` over `split` at the config's eval batch size (compiled before timing)."""
    state = create_train_state(config, jax.random.key(0))
    evaluate(state, split.images, split.labels, config.train.eval_batch_size)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        evaluate(state, split.images, split.labels, config.train.eval_batch_size)
        rates.append(len(split.labels) / (time.perf_counter() - started))
    return spread(rates)


def predict_latency(image: Path, run_dir: Path, cache_dir: Path, repeats: int) -> dict:
    """Times whole `bin/predict IMAGE --run RUN_DIR` processes: a cold start for one image."""
    env = {**os.environ, COMPILATION_CACHE_VARIABLE: str(cache_dir)}
    return predict_processes([str(image), "--run", str(run_dir)], repeats, env)["seconds"]


def machine() -> dict:
    """Returns what the figures were measured on: CPU, cores, memory, accelerator, versions, load."""
    device = jax.devices()[0]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "platform": device.platform,
        "device": device.device_kind,
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "flax", "optax")},
        "load_average_1min": os.getloadavg()[0],
    }


def digit_image(split: Split, path: Path) -> Path:
    """Writes the first image of `split` as a PNG file (a user's file for `bin/predict`); returns it."""
    from PIL import Image

    Image.fromarray(np.asarray(split.images[0, :, :, 0])).save(path)
    return path


if __name__ == "__main__":
    print(json.dumps(_throughput_worker(json.loads(sys.argv[1]))))
