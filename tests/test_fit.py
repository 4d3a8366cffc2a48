"""A short real training run through bin/train writes everything a user looks at."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, SHORT_RUN_MIN_TEST_ACCURACY, read_jsonl, run_tool
from PIL import Image

from mnist_jax import checkpoint
from mnist_jax import config as config_lib


def test_short_run_reaches_the_stated_test_accuracy(trained_run):
    summary = json.loads((trained_run.path / "summary.json").read_text())
    assert summary["test_accuracy"] >= SHORT_RUN_MIN_TEST_ACCURACY
    assert summary["parameters"] == 824_970
    assert f"test accuracy {100 * summary['test_accuracy']:.2f}%" in trained_run.stdout
    assert f"run written to {trained_run.path}" in trained_run.stdout


def test_run_directory_holds_config_metrics_plots_and_checkpoints(trained_run):
    run = trained_run.path
    config = config_lib.from_dict(json.loads((run / "config.json").read_text()))
    assert config.data.train_size == 10000 and config.train.epochs == 1
    (record,) = read_jsonl(run / "metrics.jsonl")
    assert record["epoch"] == 1 and record["step"] == 10000 // 64
    assert 0.5 < record["train_accuracy"] <= 1 and 0.9 < record["val_accuracy"] <= 1
    assert record["val_loss"] > 0 and record["images_per_second"] > 0
    for name in ("accuracy.png", "loss.png"):
        with Image.open(run / name) as image:
            assert image.format == "PNG" and image.size == (600, 400)
    steps = [p.name for p in (run / "checkpoints").iterdir()]
    assert steps == [str(record["step"])]
    assert "epoch 1/1  train loss" in trained_run.stdout


def test_latest_link_points_at_the_newest_run(trained_run):
    latest = trained_run.path.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == trained_run.path.resolve()


def test_training_refuses_to_overwrite_a_run(trained_run, data_dir):
    before = sorted(p.name for p in (trained_run.path / "checkpoints").iterdir())
    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(trained_run.path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {trained_run.path} already holds a training run; pass a new --workdir"
    assert sorted(p.name for p in (trained_run.path / "checkpoints").iterdir()) == before


def test_a_batch_larger_than_the_training_set_is_a_clear_error(tmp_path, data_dir):
    result = run_tool("train", "--data-dir", str(data_dir), "--data.train_size", "100", "--train.batch_size", "128",
                      "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: invalid train.batch_size=128: must be between 1 and the 100 training images"
    assert not (tmp_path / "run").exists()


def test_the_launchers_answer_help_without_activating_anything():
    for tool in ("train", "predict", "prepare-data"):
        result = subprocess.run([str(ROOT / "bin" / tool), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage:")


def test_ctrl_c_stops_training_and_keeps_the_checkpoints_written(tmp_path, data_dir):
    workdir = tmp_path / "run"
    args = ["--data-dir", str(data_dir), "--data-source", "prepared", "--data.train_size", "6400",
            "--train.epochs", "20", "--workdir", str(workdir)]
    # Python ignores SIGINT if it started ignored (as in a background job): restore the handler first.
    launcher = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                f"sys.argv = ['train', *{args!r}]; runpy.run_module('mnist_jax.cli.train', run_name='__main__')")
    process = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not committed_steps(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    first = committed_steps(workdir)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    last_line = stderr.strip().splitlines()[-1]
    assert last_line == f"interrupted: the checkpoints already written are intact in {workdir / 'checkpoints'}"
    assert "Traceback" not in stderr
    assert first and set(first) <= set(committed_steps(workdir))
    restored = checkpoint.restore(workdir, "latest")
    assert restored.step in committed_steps(workdir) and restored.step % 100 == 0 and restored.step < 2000


def committed_steps(workdir):
    """Steps whose save has completed (Orbax renames a finished temporary directory to the step)."""
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def test_unusable_run_and_data_directories_are_clear_errors(tmp_path, data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(blocker / "run"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot create run directory {blocker / 'run'} (Not a directory)")
    result = run_tool("prepare_data", "--data-dir", str(blocker / "tfds"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot prepare MNIST in {blocker / 'tfds'}: ")
    assert "Traceback" not in result.stderr
