"""Shared, session-scoped fixtures: one prepared MNIST, one prepared Fashion-MNIST and the trained runs."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mnist_jax.data import catalog, dataset

ROOT = Path(__file__).resolve().parents[1]
# The short run every CLI/checkpoint test shares: the default architecture, one epoch over the
# first 10,000 training images. It reaches about 96.7% on the real test set in ~10 s.
SHORT_RUN = ["--preset", "default", "--data.train_size", "10000", "--train.batch_size", "64", "--train.epochs", "1"]
SHORT_RUN_MIN_TEST_ACCURACY = 0.95
# The run bin/serve's tests draw digits for: the fast preset as a user trains it (about 99.1% test, ~30 s).
FAST_RUN = ["--preset", "fast"]
FASHION_RUN = ["--preset", "fast", "--data.name", "fashion_mnist"]


def run_tool(tool: str, *args: str, timeout: float = 600, env_extra: dict | None = None,
             **kwargs) -> subprocess.CompletedProcess:
    """Runs `python -m mnist_jax.cli.<tool> ARGS` and returns the finished process (text output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", f"mnist_jax.cli.{tool}", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def run_python(code: str, env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `python -c CODE` (dedented) with this checkout importable; returns the finished process (text output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def start_tool(tool: str, *args: str) -> subprocess.Popen:
    """Starts `python -m mnist_jax.cli.<tool> ARGS` in the background, with SIGINT handled as usual.

    Python ignores SIGINT if it started ignored (as in a background job): the launcher restores it.
    """
    launcher = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                f"sys.argv = [{tool!r}, *{list(args)!r}]; "
                f"runpy.run_module('mnist_jax.cli.{tool}', run_name='__main__')")
    return subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def committed_steps(workdir: Path) -> list[int]:
    """Steps whose save has completed (Orbax renames a finished temporary directory to the step)."""
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def wait_for_checkpoint(process: subprocess.Popen, workdir: Path, timeout: float = 120) -> list[int]:
    """Polls until `workdir` has a committed checkpoint (or the process ended); returns the steps."""
    deadline = time.monotonic() + timeout
    while not committed_steps(workdir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return committed_steps(workdir)
# The modules that take minutes (test_bench holds the longest test): the workers start on them (after
# the modules that need no MNIST, which run while the shared MNIST is being prepared), so that none is
# left running alone at the end.
LONGEST_FIRST = ("test_bench", "test_loops", "test_resume", "test_parallel", "test_distill", "test_fashion",
                 "test_data")


def pytest_collection_modifyitems(config, items):
    """Marks every test that needs real MNIST (prepared data, a trained run) as the full tier's: `make
    test-fast` runs the others, on small synthetic data. Orders the modules for the workers (see
    LONGEST_FIRST); each module keeps its own order."""
    needs_mnist = set()
    for item in items:
        if {"data_dir", "fashion_data_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mnist)
            needs_mnist.add(item.module)

    def rank(item) -> tuple[bool, int]:
        name = item.module.__name__.rpartition(".")[2]
        return item.module in needs_mnist, LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Keeps the tools' persistent XLA cache of this session out of the user's own cache dir; the
    workers share it, so a program one of them compiled loads from disk in the others."""
    directory = built_once(tmp_path_factory, "xla-cache", lambda directory: None)
    os.environ["MNIST_JAX_COMPILATION_CACHE"] = str(directory)
    return directory


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """Returns the directory `name` that every worker of this pytest session shares, made by `build`
    in the first worker to ask while the others wait (pytest-xdist runs one process per worker)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's directory, above each worker's own
    directory = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / f"{name}.done").exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(directory)
            (base / f"{name}.done").touch()
    return directory


@pytest.fixture(scope="session", autouse=True)
def shared_runs_started(request, tmp_path_factory, compilation_cache):
    """When the session has tests that need real MNIST, starts preparing it and training the short run at
    once, in a background thread, while the first tests run; `data_dir` and `trained_run` then wait for
    it (or build it themselves, and report the failure, if it failed)."""
    if any("data_dir" in getattr(item, "fixturenames", ()) for item in request.session.items):
        threading.Thread(target=lambda: _suppress(build_data_dir, tmp_path_factory) and
                         _suppress(build_trained_run, tmp_path_factory) and
                         _suppress(build_fast_run, tmp_path_factory), daemon=True).start()


def _suppress(build: Callable, tmp_path_factory) -> bool:
    try:
        build(tmp_path_factory)
    except Exception:  # noqa: BLE001 - the fixture that needs it builds it again and reports the failure
        return False
    return True


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    path: Path  # the run directory
    stdout: str  # what bin/train printed


def build_data_dir(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "tfds", lambda directory: dataset.prepare(directory, source="registry",
                                                                                  log=lambda line: None))


def build_fashion_data_dir(tmp_path_factory) -> Path:
    """A tfds data directory with Fashion-MNIST prepared from Debian's dataset-fashion-mnist (make fashion-mnist)."""
    return built_once(tmp_path_factory, "tfds-fashion",
                      lambda directory: dataset.prepare(directory, source="debian", spec=catalog.FASHION_MNIST,
                                                        log=lambda line: None))


def build_run(tmp_path_factory, name: str, flags: list[str], data: Callable = build_data_dir) -> TrainedRun:
    """Trains `flags` once per session with the real bin/train, as the run `name`, on the data directory
    `data` builds (MNIST's unless told)."""
    data_dir = data(tmp_path_factory)

    def train(runs: Path) -> None:
        result = run_tool("train", *flags, "--data-dir", str(data_dir), "--data-source", "prepared",
                          "--runs-dir", str(runs), "--workdir", str(runs / name))
        assert result.returncode == 0, result.stderr
        (runs / "stdout.txt").write_text(result.stdout)

    runs = built_once(tmp_path_factory, f"runs-{name}", train)
    return TrainedRun(path=runs / name, stdout=(runs / "stdout.txt").read_text())


def build_trained_run(tmp_path_factory) -> TrainedRun:
    return build_run(tmp_path_factory, "short", SHORT_RUN)


def build_fast_run(tmp_path_factory) -> TrainedRun:
    return build_run(tmp_path_factory, "fast", FAST_RUN)


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory, fashion_data_dir) -> TrainedRun:
    """The fast preset trained on Fashion-MNIST (see FASHION_RUN), shared by the workers like `trained_run`."""
    return build_run(tmp_path_factory, "fashion", FASHION_RUN, build_fashion_data_dir)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A tfds data directory with MNIST prepared from the PyPI registry copy (tests copy it before damaging it)."""
    return build_data_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory) -> Path:
    """A tfds data directory with Fashion-MNIST prepared from Debian's package (tests copy it before damaging it)."""
    return build_fashion_data_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def mnist(data_dir):
    return dataset.load(data_dir)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_dir) -> TrainedRun:
    """A run written by the real train CLI (see SHORT_RUN), shared by the workers: tests copy it before
    changing it."""
    return build_trained_run(tmp_path_factory)


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory, data_dir) -> TrainedRun:
    """A run of the fast preset (see FAST_RUN), shared by the workers like `trained_run`."""
    return build_fast_run(tmp_path_factory)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
