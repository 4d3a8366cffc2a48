"""Training survives SIGKILL, SIGINT and SIGTERM, and faults give one clear line and lose nothing.

Every test causes the fault for real on a small subset (20 steps per epoch, 3 epochs, a
checkpoint every 5 steps) and compares the parameters bit for bit with an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess

import jax
import numpy as np
import pytest
from conftest import committed_steps, read_jsonl, run_tool, start_tool, wait_for_checkpoint

from mnist_jax.training import checkpoint

SMALL_RUN = ["--data.train_size", "1280", "--train.batch_size", "64", "--train.epochs", "3",
             "--train.checkpoint_every", "5"]
TOTAL_STEPS = 3 * 1280 // 64


def train_args(data_dir, workdir, *extra):
    return [*SMALL_RUN, *extra, "--data-dir", str(data_dir), "--data-source", "prepared", "--workdir", str(workdir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted small run: the parameters every interrupted one must end with."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = run_tool("train", *train_args(data_dir, workdir))
    assert result.returncode == 0, result.stderr
    return workdir


def assert_same_final_state(workdir, reference):
    ours, theirs = checkpoint.restore(workdir, "latest"), checkpoint.restore(reference, "latest")
    assert ours.step == theirs.step == TOTAL_STEPS
    for mine, other in zip(jax.tree.leaves(ours.state), jax.tree.leaves(theirs.state), strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(other))
    assert read_jsonl(workdir / "metrics.jsonl") == [
        {**record, "time": mine["time"], "train_seconds": mine["train_seconds"],
         "images_per_second": mine["images_per_second"]}
        for record, mine in zip(read_jsonl(reference / "metrics.jsonl"), read_jsonl(workdir / "metrics.jsonl"),
                                strict=True)
    ]


def test_a_run_killed_with_sigkill_resumes_to_bit_identical_parameters(tmp_path, data_dir, reference):
    workdir = tmp_path / "run"
    process = start_tool("train", *train_args(data_dir, workdir))
    assert wait_for_checkpoint(process, workdir)
    process.kill()
    process.wait(timeout=60)
    assert not (workdir / "summary.json").exists(), "the run finished before it could be killed"
    (workdir / "checkpoints" / "999.orbax-checkpoint-tmp-1234").mkdir()  # as a save killed mid-way leaves
    killed_at = committed_steps(workdir)[-1]

    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    assert f"resuming {workdir} from step {killed_at}" in result.stdout
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
    assert_same_final_state(workdir, reference)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_write_a_checkpoint_and_say_how_to_resume(tmp_path, data_dir, reference, sig):
    workdir = tmp_path / "run"
    process = start_tool("train", *train_args(data_dir, workdir))
    assert wait_for_checkpoint(process, workdir)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    *_, stopped_line, resume_line = stderr.strip().splitlines()
    assert stopped_line.startswith(f"{sig.name}: stopped at step ")
    step = int(stopped_line.split()[4])
    assert stopped_line.endswith(f"its checkpoint is complete in {workdir / 'checkpoints'}")
    assert resume_line == f"resume with: bin/train --workdir {workdir}"
    assert step < TOTAL_STEPS and committed_steps(workdir)[-1] == step

    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    assert_same_final_state(workdir, reference)


def unfinished_copy(reference, tmp_path):
    """A copy of the reference run as it was before its final test: checkpoints, no summary."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir, symlinks=True)
    (workdir / "summary.json").unlink()
    return workdir


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_checkpoint_is_named_and_the_newest_intact_one_resumes(tmp_path, data_dir, reference, damage):
    workdir = unfinished_copy(reference, tmp_path)
    *_, older, newest = committed_steps(workdir)
    files = sorted((p for p in (workdir / "checkpoints" / str(newest) / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    if damage == "truncate":
        files[-1].write_bytes(files[-1].read_bytes()[: files[-1].stat().st_size // 2])
    else:
        for path in files:
            path.unlink()

    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith(f"error: checkpoint step {newest} in {workdir / 'checkpoints'} is damaged (state: ")
    assert message.endswith(f"to resume from step {older}, the newest intact one, run: "
                            f"bin/train --workdir {workdir} --from-step {older}")
    assert "Traceback" not in result.stderr

    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir), "--from-step", str(older))
    assert result.returncode == 0, result.stderr
    assert f"resuming {workdir} from step {older}" in result.stdout
    assert [p.name.split("-")[0] for p in (workdir / "discarded-checkpoints").iterdir()] == [str(newest)]
    assert_same_final_state(workdir, reference)


def test_a_checkpoint_of_another_config_names_what_differs(tmp_path, data_dir, reference):
    workdir = unfinished_copy(reference, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["dense_features"] = [128]
    (workdir / "config.json").write_text(json.dumps(config))
    result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: checkpoint step {TOTAL_STEPS} in {workdir / 'checkpoints'} was written "
                                     "by another config (model.dense_features: 256 -> 128); train it in a new "
                                     "--workdir or pass --fresh")


def test_fresh_starts_over_only_when_asked(tmp_path, data_dir, reference):
    workdir = unfinished_copy(reference, tmp_path)
    result = run_tool("train", *train_args(data_dir, workdir, "--train.epochs", "1"), "--fresh")
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stdout
    assert [r["epoch"] for r in read_jsonl(workdir / "metrics.jsonl")] == [1]
    assert committed_steps(workdir) == [15, 20]  # the latest two (epoch 1 ends at step 20)


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_good_checkpoints(tmp_path, data_dir):
    workdir = tmp_path / "run"
    # Plain SGD whose one-cycle learning rate climbs to 300 diverges after a few checkpoints (step 28 here).
    result = run_tool("train", *train_args(data_dir, workdir, "--train.optimizer", "sgd",
                                           "--train.learning_rate", "300"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    kept = committed_steps(workdir)
    assert kept, "the run diverged before its first checkpoint; the test needs one"
    assert re.fullmatch(r"error: (training loss became (nan|inf|-inf) at step \d+|the parameters became non-finite "
                        rf"by step \d+); the last good checkpoint is step {kept[-1]}; lower --train.learning_rate and "
                        "train again with --fresh", message), message
    for step in kept:
        restored = checkpoint.restore(workdir, str(step))
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(restored.state.params))


@contextlib.contextmanager
def read_only(path):
    """Makes `path` read-only for real, even for root (chattr +i); skips where that is impossible."""
    immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not immutable:
        path.chmod(0o555)
    try:
        probe = path / "probe"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("cannot make a read-only directory on this machine")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


def test_a_read_only_run_directory_fails_before_training_and_keeps_its_checkpoints(tmp_path, data_dir, reference):
    workdir = unfinished_copy(reference, tmp_path)
    before = committed_steps(workdir)
    with read_only(workdir):
        result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: cannot write run directory {workdir} (")
    assert committed_steps(workdir) == before


def test_a_checkpoint_that_cannot_be_saved_stops_the_run_and_keeps_the_earlier_ones(tmp_path, data_dir, reference):
    workdir = unfinished_copy(reference, tmp_path)
    older = committed_steps(workdir)[-2]
    discarded = tmp_path / "moved"
    discarded.mkdir()
    for step in committed_steps(workdir)[-1:]:
        (workdir / "checkpoints" / str(step)).rename(discarded / str(step))
    with read_only(workdir / "checkpoints"):
        result = run_tool("train", "--data-dir", str(data_dir), "--workdir", str(workdir))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot write checkpoint step ")
    assert "the checkpoints before it are intact" in result.stderr
    assert committed_steps(workdir)[-1] == older
    assert checkpoint.restore(workdir, "latest").step == older
