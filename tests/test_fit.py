"""A short real training run through bin/train writes everything a user looks at."""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT, SHORT_RUN_MIN_TEST_ACCURACY, read_jsonl, run_tool
from PIL import Image

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


def test_rerunning_a_finished_run_says_so_and_changes_nothing(trained_run, data_dir):
    before = sorted(p.name for p in (trained_run.path / "checkpoints").iterdir())
    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(trained_run.path))
    assert result.returncode == 0, result.stderr
    summary = json.loads((trained_run.path / "summary.json").read_text())
    assert result.stdout.strip() == (f"{trained_run.path} is finished: test accuracy "
                                     f"{100 * summary['test_accuracy']:.2f}%; pass --fresh to train it again, "
                                     "or a new --workdir")
    assert sorted(p.name for p in (trained_run.path / "checkpoints").iterdir()) == before


def test_a_run_is_not_continued_with_another_config(trained_run, data_dir):
    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(trained_run.path),
                      "--train.epochs", "3", "--model.dropout", "0.5")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {trained_run.path} holds a run of another config "
                                     "(model.dropout: 0.25 -> 0.5; train.epochs: 1 -> 3); resume it without config "
                                     "flags, or pass --fresh to start over")


def test_a_batch_larger_than_the_training_set_is_a_clear_error(tmp_path, data_dir):
    result = run_tool("train", "--data-dir", str(data_dir), "--data.train_size", "100", "--train.batch_size", "128",
                      "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: invalid train.batch_size=128: must be between 1 and the 100 training images"
    assert not (tmp_path / "run").exists()


def test_the_launchers_answer_help_without_activating_anything():
    for tool in ("train", "predict", "prepare-data", "evaluate", "eval-inputs", "export", "bench-onnx"):
        result = subprocess.run([str(ROOT / "bin" / tool), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage:")


def test_unusable_run_and_data_directories_are_clear_errors(tmp_path, data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(blocker / "run"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot write run directory {blocker / 'run'} (Not a directory)")
    result = run_tool("prepare_data", "--data-dir", str(blocker / "tfds"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot prepare MNIST in {blocker / 'tfds'}: ")
    assert "Traceback" not in result.stderr
