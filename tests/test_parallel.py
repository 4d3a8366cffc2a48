"""Data parallelism on 8 fake CPU devices, and two processes training together on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, committed_steps, read_jsonl, run_python, run_tool

from mnist_jax import config as config_lib
from mnist_jax.training import checkpoint, parallel

EIGHT_DEVICES = {"JAX_NUM_CPU_DEVICES": "8"}
TWO_PROCESS_RUN = ["--data.train_size", "640", "--train.batch_size", "64", "--train.epochs", "1",
                   "--train.checkpoint_every", "5"]


def test_the_sharded_step_on_8_devices_matches_the_single_device_step_in_both_forms(data_dir):
    # The default preset (dropout) is partitioned by the compiler; the fast preset with BatchNorm groups of 8
    # rows runs per device (64 rows / 8 devices) with one all-reduce: the same steps on one device.
    result = run_python(f"""
        import re
        import jax, numpy as np
        from mnist_jax import config
        from mnist_jax.data import dataset
        from mnist_jax.training import parallel
        from mnist_jax.training.loops import run_keys
        from mnist_jax.training.step import StepOptions, create_train_state, train_step

        assert jax.device_count() == 8
        mesh = parallel.data_mesh()
        keys = run_keys(0)
        train = dataset.split(dataset.load({str(data_dir)!r}), config.get_preset("default").data).train
        per_device = config.get_preset("fast").replace(model={{"norm_group": 8}}, train={{"batch_size": 64}})
        for cfg in (config.get_preset("default"), per_device):  # the first with dropout: masks must not depend on the sharding
            options = StepOptions.of(cfg, mesh)
            assert (options.per_device is None) == (cfg.model.dropout > 0)
            single = create_train_state(cfg, keys["init"])
            sharded = jax.device_put(create_train_state(cfg, keys["init"]), parallel.replicated(mesh))
            for step in range(4):
                rows = slice(step * 64, (step + 1) * 64)
                batch = {{"image": train.images[rows], "label": train.labels[rows]}}
                on_mesh = parallel.global_batch(batch, parallel.batch_sharding(mesh))
                assert len(on_mesh["image"].addressable_shards) == 8
                assert on_mesh["image"].addressable_shards[0].data.shape == (8, 28, 28, 1)
                single, single_metrics = train_step(single, jax.device_put(batch), keys["dropout"], StepOptions.of(cfg))
                if step == 0 and options.per_device is not None:
                    program = train_step.lower(sharded, on_mesh, keys["dropout"], options).compile().as_text()
                    assert len(re.findall(r"\\ball-reduce(?:-start)?\\(", program)) == 1, "one all-reduce per step"
                sharded, sharded_metrics = train_step(sharded, on_mesh, keys["dropout"], options)
                np.testing.assert_allclose(sharded_metrics["loss"], single_metrics["loss"], rtol=1e-5)
            assert sharded.params["Dense_0"]["kernel"].sharding.is_fully_replicated
            assert len(sharded.params["Dense_0"]["kernel"].sharding.device_set) == 8
            for a, b in zip(jax.tree.leaves((sharded.params, sharded.batch_stats)),
                            jax.tree.leaves((single.params, single.batch_stats)), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        print("equivalent")
    """, EIGHT_DEVICES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("equivalent")


@pytest.mark.parametrize(("model", "devices", "expected"), [
    ({"norm_group": 32}, 2, True),  # the fast preset: 64 rows per device, two whole groups each
    ({"norm_group": 32}, 4, True),
    ({"norm_group": 32}, 8, False),  # 16 rows per device: a group spans two devices
    ({"norm_group": 0}, 2, False),  # statistics over the whole batch
    ({"norm_group": 32}, 1, False),  # nothing to split
    ({"norm": "none", "norm_group": 0}, 8, True),
    ({"norm": "none", "dropout": 0.25}, 2, False),  # dropout's masks are drawn for the whole batch
    ({"name": "resnet", "norm_group": 16, "dropout": 0.0}, 2, True),  # a ResNet always has BatchNorm
    ({"name": "resnet", "norm_group": 0, "dropout": 0.0}, 2, False),
])
def test_a_step_runs_per_device_when_no_row_needs_another_devices_rows(model, devices, expected):
    config = config_lib.get_preset("fast").replace(model=model)
    assert config.train.batch_size == 128
    assert parallel.rows_are_independent(config, devices) == expected


def test_a_run_on_8_devices_restores_on_1_and_a_1_device_checkpoint_resumes_on_8(tmp_path, data_dir, trained_run):
    workdir = tmp_path / "eight"
    result = run_tool("train", *TWO_PROCESS_RUN, "--data-dir", str(data_dir), "--data-source", "prepared",
                      "--workdir", str(workdir), env_extra=EIGHT_DEVICES)
    assert result.returncode == 0, result.stderr
    assert "HostLoop on 8 cpu device(s), 1 process(es)" in result.stdout
    restored = checkpoint.restore(workdir, "latest")  # this test process has 1 device
    assert restored.step == 10 and jax.device_count() == 1
    assert restored.state.params["Conv_0"]["kernel"].sharding.device_set == {jax.devices()[0]}

    copy = tmp_path / "one-to-eight"
    shutil.copytree(trained_run.path, copy, symlinks=True)
    (copy / "summary.json").unlink()
    result = run_tool("train", "--data-dir", str(data_dir), "--data-source", "prepared", "--workdir", str(copy),
                      env_extra=EIGHT_DEVICES)
    assert result.returncode == 0, result.stderr
    assert "on 8 cpu device(s)" in result.stdout and "resuming" in result.stdout
    before = json.loads((trained_run.path / "summary.json").read_text())
    after = json.loads((copy / "summary.json").read_text())
    assert after["test_accuracy"] == before["test_accuracy"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_processes(data_dir, workdir, *extra, count=2):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        subprocess.Popen([sys.executable, "-m", "mnist_jax.cli.train", *TWO_PROCESS_RUN, *extra,
                          "--data-dir", str(data_dir), "--data-source", "prepared", "--workdir", str(workdir),
                          "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count),
                          "--process-id", str(index)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for index in range(count)
    ]


def test_two_processes_train_together_and_write_one_checkpoint(tmp_path, data_dir, trained_run):
    # With an online teacher, the most that crosses processes: each process restores the teacher and the
    # step runs it on the global batch. (Two processes without a teacher: the next test starts them.)
    teacher = ["--train.teachers", str(trained_run.path), "--train.distillation", "0.9",
               "--train.teacher_views", "augmented"]
    workdir = tmp_path / "run"
    processes = start_processes(data_dir, workdir, *teacher)
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    assert "HostLoop on 2 cpu device(s), 2 process(es)" in outputs[0][0]
    # Only process 0 logs (gloo's own C++ connection line aside).
    assert [line for line in outputs[1][0].splitlines() if not line.startswith("[Gloo]")] == []
    assert committed_steps(workdir) == [5, 10]
    assert [r["step"] for r in read_jsonl(workdir / "metrics.jsonl")] == [10]
    assert "label every augmented batch" in outputs[0][0]
    assert (workdir / "teachers.json").exists()

    # The same global batches on one process and one device give the same parameters.
    alone = tmp_path / "alone"
    result = run_tool("train", *TWO_PROCESS_RUN, *teacher, "--data-dir", str(data_dir), "--data-source", "prepared",
                      "--workdir", str(alone))
    assert result.returncode == 0, result.stderr
    together, single = checkpoint.restore(workdir, "latest"), checkpoint.restore(alone, "latest")
    # XLA:CPU sums a split batch in another order: through the default preset's blur and the teacher
    # that leaves up to 2e-6 and 7e-6, where the teacher's targets instead of the labels move these
    # 10 steps' parameters by 6e-4 (median) to 2e-2, so a wrong batch, key or target still fails.
    atol = 1e-5
    for a, b in zip(jax.tree.leaves(together.state.params), jax.tree.leaves(single.state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol)


def test_when_one_process_dies_the_other_stops_with_an_error_instead_of_hanging(tmp_path, data_dir):
    workdir = tmp_path / "run"
    lead, other = start_processes(data_dir, workdir, "--train.epochs", "50", "--heartbeat-timeout", "5")
    deadline = time.monotonic() + 300
    while not committed_steps(workdir) and lead.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert committed_steps(workdir), "no checkpoint was written"
    other.send_signal(signal.SIGKILL)
    other.wait(timeout=60)
    started = time.monotonic()
    try:
        _, stderr = lead.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        lead.kill()
        pytest.fail("process 0 hung after process 1 died")
    assert lead.returncode != 0
    assert "another task died" in stderr
    assert time.monotonic() - started < 120
    assert checkpoint.restore(workdir, "latest").step in committed_steps(workdir)


def test_a_batch_that_does_not_split_over_the_devices_stops_before_compiling(tmp_path, data_dir):
    result = run_tool("train", "--train.batch_size", "60", "--data-dir", str(data_dir), "--data-source", "prepared",
                      "--workdir", str(tmp_path / "run"), env_extra=EIGHT_DEVICES)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: train.batch_size=60 does not split over 8 devices: it must be a multiple "
                                     "of 8")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(("cores", "batch", "cluster", "expected"), [
    (2, 128, parallel.Cluster(), 2),  # one device per core
    (1, 128, parallel.Cluster(), 1),  # taskset -c 0
    (8, 100, parallel.Cluster(), 5),  # as many as split batch 100 and eval batch 1000 evenly
    (3, 64, parallel.Cluster(), 2),
    (2, 128, parallel.Cluster("127.0.0.1:1234", 2, 0), 1),  # the processes of a cluster share the cores
])
def test_cpu_devices_follow_the_cores_and_split_the_batches(cores, batch, cluster, expected):
    config = config_lib.get_preset("fast").replace(train={"batch_size": batch})
    assert parallel.cpu_device_count(config, cluster, cores) == expected
    assert parallel.cpu_device_count(config.replace(train={"cpu_devices": 3}), cluster, cores) == 3
