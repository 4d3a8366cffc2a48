"""Orbax checkpoints: the config travels with the state, retention keeps latest and best,
and a checkpoint restores in another process and on another device count."""

from __future__ import annotations

import json
import shutil
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_python, run_tool
from PIL import Image

from mnist_jax import config as config_lib
from mnist_jax.data import dataset
from mnist_jax.errors import CheckpointFormatError, NoCheckpoint
from mnist_jax.inference.predict import predict
from mnist_jax.run_dir import saved_steps
from mnist_jax.training import checkpoint, trainer
from mnist_jax.training.step import create_train_state, evaluate

TINY = config_lib.get_preset("tiny")


def test_manager_keeps_the_latest_steps_and_the_best_by_validation_accuracy(tmp_path):
    state = create_train_state(TINY, jax.random.key(0))
    manager = checkpoint.open_manager(tmp_path, keep=2)
    for step, accuracy in zip((10, 20, 30, 40, 50), (0.90, 0.97, 0.93, 0.92, 0.91), strict=True):
        checkpoint.save(manager, step, state.replace(step=jnp.int32(step)), TINY, {"val_accuracy": accuracy}, {})
    manager.wait_until_finished()
    manager.close()
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [20, 40, 50]
    assert checkpoint.restore(tmp_path, "best").step == 20
    latest = checkpoint.restore(tmp_path, "latest")
    assert latest.step == 50 and latest.config == TINY
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(latest.state.params), jax.device_get(state.params))
    assert checkpoint.restore(tmp_path / "40").step == 40  # a step directory alone is enough


def test_restore_in_a_new_process_gives_identical_predictions(trained_run, mnist, tmp_path):
    images = mnist.test_images[:300]
    np.save(tmp_path / "images.npy", images)
    result = run_python(f"""
        import numpy as np
        from mnist_jax.training import checkpoint
        from mnist_jax.inference.predict import predict
        state = checkpoint.restore({str(trained_run.path)!r}).state
        np.save({str(tmp_path / 'probs.npy')!r}, predict(state, np.load({str(tmp_path / 'images.npy')!r})))
    """)
    assert result.returncode == 0, result.stderr
    here = predict(checkpoint.restore(trained_run.path).state, images)
    np.testing.assert_array_equal(np.load(tmp_path / "probs.npy"), here)
    assert np.mean(here.argmax(1) == mnist.test_labels[:300]) > 0.9


def test_the_reported_test_accuracy_is_the_best_checkpoints(trained_run, mnist):
    summary = json.loads((trained_run.path / "summary.json").read_text())
    restored = checkpoint.restore(trained_run.path, "best")
    result = evaluate(restored.state, mnist.test_images, mnist.test_labels.astype(np.int32), 1000)
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-7)
    assert restored.step == summary["best_step"]


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "does not exist"),
    (lambda tmp: tmp, "holds no checkpoints"),
])
def test_restore_from_a_wrong_path_says_what_is_wrong(tmp_path, make, message):
    with pytest.raises(NoCheckpoint, match=message) as error:
        checkpoint.restore(make(tmp_path))
    assert error.value.no_run


def test_a_damaged_metrics_file_is_named_with_what_to_do(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run.path / "checkpoints", run / "checkpoints")
    step = saved_steps(run / "checkpoints")[-1]
    (run / "checkpoints" / str(step) / "metrics" / "metrics").write_text('{"val_accuracy": 0.9')  # cut short
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    result = run_tool("predict", str(image), "--run", str(run))
    assert result.returncode == 2 and result.stdout == ""
    directory = run / "checkpoints"
    assert result.stderr.strip() == (
        f"error: checkpoint step {step} in {directory} is damaged (metrics: JSONDecodeError: Expecting ',' "
        f"delimiter: line 1 column 21 (char 20)); move {directory / str(step)} out of {directory} to use the "
        "other checkpoints")


def test_a_resnet_with_ema_restores_its_batchnorm_statistics_and_ema_in_a_new_process(mnist, tmp_path):
    config = TINY.replace(model={"name": "resnet", "stage_features": (8, 16), "blocks_per_stage": 1},
                          data={"train_size": 640}, train={"batch_size": 32, "ema": 0.9})
    trainer.train_and_evaluate(config, tmp_path / "run", dataset.split(mnist, config.data), log=lambda line: None)
    images = mnist.test_images[:200]
    np.save(tmp_path / "images.npy", images)
    result = run_python(f"""
        import numpy as np
        from mnist_jax.training import checkpoint
        from mnist_jax.inference.predict import predict
        state = checkpoint.restore({str(tmp_path / 'run')!r}).state
        np.save({str(tmp_path / 'probs.npy')!r}, predict(state, np.load({str(tmp_path / 'images.npy')!r})))
    """)
    assert result.returncode == 0, result.stderr
    restored = checkpoint.restore(tmp_path / "run")
    assert restored.config == config and restored.state.ema_decay == 0.9
    fresh = create_train_state(config, jax.random.key(0))
    stats = jax.device_get(restored.state.batch_stats)["BatchNorm_0"]
    assert not np.allclose(stats["mean"], jax.device_get(fresh.batch_stats)["BatchNorm_0"]["mean"])
    ema, params = jax.device_get((restored.state.ema_params, restored.state.params))
    assert not np.allclose(ema["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    here = predict(restored.state, images)
    np.testing.assert_array_equal(np.load(tmp_path / "probs.npy"), here)


def test_a_checkpoint_of_another_layout_is_refused_in_one_line_naming_what_it_lacks(tmp_path):
    import orbax.checkpoint as ocp
    from flax.training import train_state

    state = create_train_state(TINY, jax.random.key(0))
    old = train_state.TrainState.create(apply_fn=state.apply_fn, params=state.params, tx=state.tx)
    with ocp.CheckpointManager(tmp_path.absolute()) as manager:  # what version 0.1 wrote
        manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(old),
                                                config=ocp.args.JsonSave(config_lib.to_dict(TINY))))
    with pytest.raises(CheckpointFormatError, match="step 7 .* is not a train state that this version of mnist_jax "
                                                    "reads: it lacks batch_stats, ema_params$"):
        checkpoint.restore(tmp_path, "latest")


def test_a_checkpoint_of_an_unknown_format_version_is_refused(trained_run, tmp_path, monkeypatch):
    run = checkpoint.restore(trained_run.path, "latest")
    manager = checkpoint.open_manager(tmp_path)
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)  # what a later version of mnist_jax would write
    checkpoint.save(manager, run.step, run.state, run.config, None, {})
    checkpoint.finish(manager)
    monkeypatch.undo()
    with pytest.raises(CheckpointFormatError, match=f"step {run.step} .* is of format 99; this version of mnist_jax "
                                                    f"reads format {checkpoint.FORMAT_VERSION}") as error:
        checkpoint.restore(tmp_path, "latest")
    assert error.value.found == 99


def test_a_checkpoint_saved_before_checkpoints_recorded_their_format_still_restores(tmp_path):
    import orbax.checkpoint as ocp

    state = create_train_state(TINY, jax.random.key(0))
    with ocp.CheckpointManager(tmp_path.absolute()) as manager:  # what main wrote before format versions
        manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                config=ocp.args.JsonSave(config_lib.to_dict(TINY)),
                                                progress=ocp.args.JsonSave({})))
    restored = checkpoint.restore(tmp_path, "latest")
    assert restored.step == 7 and restored.config == TINY
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state.params), jax.device_get(state.params))


def test_holding_back_abandoned_reads_keeps_every_other_report(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable.exc_value))
    checkpoint._hold_back_abandoned_reads.cache_clear()
    checkpoint._hold_back_abandoned_reads()
    try:
        abandoned, other = RuntimeError("Event loop is closed"), ValueError("a bug elsewhere")
        for error in (abandoned, other):
            sys.unraisablehook(types.SimpleNamespace(exc_value=error))
        assert seen == [other]
    finally:
        checkpoint._hold_back_abandoned_reads.cache_clear()
