"""bin/bench in a tiny mode on real data: every figure is in its JSON and its table (values are not checked),
and the side-by-side run of another commit; its step timing on two CPU devices."""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT, run_python, run_tool

FIGURES = [
    "process_seconds", "process_seconds_cold_cache", "val_target_from_start_seconds", "val_target_training_seconds",
    "test_target_from_start_seconds", "test_target_training_seconds", "test_accuracy_percent", "peak_rss_mib",
    "cores_busy", "predict_cold_start_seconds", "train_images_per_second_batch_8",
    "train_images_per_second_batch_8_one_core", "core_scaling_batch_8", "devices_alone_images_per_second_batch_8",
    "devices_alone_scaling_batch_8", "compile_seconds_batch_8",
    "eval_images_per_second",
]


def test_bench_measures_every_figure_beside_another_commit_and_writes_json(data_dir, tmp_path):
    path = tmp_path / "bench.json"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    # Compared with HEAD itself: the bin/train of a worktree of HEAD alternates with this checkout's, and
    # this checkout's runs are the figures' runs (4 tiny trainings in all).
    result = run_tool("bench", "--preset", "tiny", "--data.train_size", "2000", "--train.batch_size", "32",
                      "--repeats", "1", "--compare", "HEAD",
                      "--batch-sizes", "8", "--steps", "2", "--target", "0.5", "--data-dir", str(data_dir),
                      "--data-source", "prepared", "--json", str(path))
    assert result.returncode == 0, result.stderr
    results = json.loads(path.read_text())
    assert [f["key"] for f in results["figures"]] == FIGURES
    for figure in results["figures"]:
        assert {"figure", "unit", "median", "min", "max", "values"} <= set(figure)
        assert figure["values"] and all(isinstance(v, float) for v in figure["values"]), figure  # target 50%: reached
        assert figure["min"] <= figure["median"] <= figure["max"]
        assert figure["figure"] in result.stdout
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["platform"] == "cpu"
    assert {"cpu", "jax", "flax", "optax", "load_average_1min", "load_average_1min_end"} <= set(machine)
    assert results["config"]["data"]["train_size"] == 2000 and results["preset"] == "tiny"
    comparison = results["comparison"]
    assert comparison["commits"][0] == head
    for side in comparison["sides"].values():
        assert side["process_seconds"]["median"] > side["train_seconds"]["median"] > 0
        assert 0 < side["cores_busy"]["median"] <= machine["cores"] + 0.5
    # The same commit on the same data and seed: the same accuracy, so a ratio of exactly 1.
    assert comparison["ratios"]["test_accuracy_percent"] == 1.0
    assert "side by side, medians of 1 alternating runs each" in result.stdout
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "mnist-bench-" not in worktrees  # the compared commit's worktree is gone


def test_bench_takes_trains_overrides_and_rejects_a_bad_value_in_one_line():
    result = run_tool("bench", "--train.epochs", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: invalid train.epochs=0: must be at least 1"


def test_the_step_timings_on_two_cpu_devices_finish_with_more_steps_than_xla_keeps_in_flight():
    # XLA:CPU admits 32 computations in flight per device: 60 steps queued at once hung two devices' collectives.
    result = run_python("""
        import numpy as np
        from mnist_jax import config
        from mnist_jax.data.dataset import Split
        from mnist_jax.evaluation.timing import devices_alone_throughput, train_throughput

        rng = np.random.default_rng(0)
        train = Split(rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.int32))
        for timing in (train_throughput, devices_alone_throughput):
            result = timing(config.get_preset("tiny"), train, batch_size=64, steps=60, repeats=2)
            print(result["devices"], result["images_per_second"]["median"] > 0)
    """, {"JAX_NUM_CPU_DEVICES": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "True", "2", "True"]
