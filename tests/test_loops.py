"""The two loop forms: same results, one compile, no hidden host/device copies."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import run_python

from mnist_jax import config as config_lib
from mnist_jax.data import dataset
from mnist_jax.training import parallel, trainer
from mnist_jax.training.loops import DeviceLoop, HostLoop, make_loop, run_keys, segment_length
from mnist_jax.training.step import create_train_state, evaluate, steps_per_epoch

# 20 steps per epoch; device chunks of 7 steps, so segments end inside chunks and at epoch ends.
SMALL = config_lib.get_preset("tiny").replace(data={"train_size": 640}, train={"batch_size": 32, "epochs": 2,
                                                                               "chunk_steps": 7})


@pytest.fixture(scope="module")
def splits(mnist):
    return dataset.split(mnist, SMALL.data)


def run_segments(loop, config, state, steps):
    """Drives `loop` through `steps` global steps the way fit does; returns (state, losses)."""
    losses, step = [], 0
    while step < steps:
        count = segment_length(step, steps_per_epoch(config), config.train.checkpoint_every, loop.limit)
        state, metrics = loop.run(state, step, count)
        losses.extend(jax.device_get(metrics["loss"]))
        step += count
    return state, np.array(losses)


# A tiny ResNet with EMA and label smoothing: BatchNorm statistics and the EMA must advance alike in both forms.
RESNET = ({"name": "resnet", "stage_features": (8, 16), "blocks_per_stage": 1}, {"ema": 0.9, "label_smoothing": 0.1})


# Soft targets of a distilled run travel with their images in both forms.
DISTILLED = ({}, {"label_smoothing": 0.1, "teachers": ("runs/teacher",), "distillation": 0.5})
# Teachers labelling the augmented batches: the same teacher state reaches the step in both forms.
ONLINE = ({}, {"teachers": ("runs/teacher",), "distillation": 0.5, "teacher_views": "augmented"})


def teacher_arguments(config, splits, seed: int) -> dict:
    """Any teachers will do here: a fixed random distribution per image, or an untrained net's."""
    if not config.train.distillation:
        return {}
    if config.train.teacher_views == "augmented":
        return {"teachers": (create_train_state(config, jax.random.key(seed)).replace(opt_state=None),)}
    return {"teacher_targets": np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(seed),
                                                                   (len(splits.train.labels), 10))))}


@pytest.mark.parametrize("checkpoint_every, augment, model, train", [
    (0, {}, {}, {}), (0, {}, *RESNET), (5, {}, *DISTILLED), (5, {"rotation": 8.0, "translation": 1.5}, *ONLINE)])
def test_host_and_device_loops_take_the_same_steps(splits, checkpoint_every, augment, model, train):
    config = SMALL.replace(train={"checkpoint_every": checkpoint_every, **train}, augment=augment, model=model)
    keys = run_keys(0)
    steps = 2 * steps_per_epoch(config)
    teachers = teacher_arguments(config, splits, seed=2)
    host_state, host_losses = run_segments(HostLoop(config, splits.train, keys, parallel.data_mesh(), **teachers),
                                           config, create_train_state(config, keys["init"]), steps)
    device_state, device_losses = run_segments(DeviceLoop(config, splits.train, keys, parallel.data_mesh(), **teachers),
                                               config, create_train_state(config, keys["init"]), steps)
    assert int(host_state.step) == int(device_state.step) == steps
    if teachers:  # the teachers count, row by row: shifted rows or another teacher change the steps
        other = ({"teacher_targets": np.roll(teachers["teacher_targets"], 1, axis=0)} if "teacher_targets" in teachers
                 else teacher_arguments(config, splits, seed=3))
        _, other_losses = run_segments(HostLoop(config, splits.train, keys, parallel.data_mesh(), **other),
                                       config, create_train_state(config, keys["init"]), steps)
        assert not np.allclose(other_losses, host_losses, rtol=1e-3)
    np.testing.assert_allclose(device_losses, host_losses, rtol=1e-4, atol=1e-5)
    # The forms compile the step differently (alone, or inside a scan), so float rounding differs, and
    # Adam's normalised updates carry it along: in a ResNet, elements differ by up to 1e-4 after 40
    # steps. The two trajectories must still agree to a thousandth of the distance training moved the
    # variables (measured: 6e-5 for the ResNet, 3e-7 for the CNN); another batch or key would not.
    initial = trained_variables(create_train_state(config, keys["init"]))
    host, device = trained_variables(host_state), trained_variables(device_state)
    assert distance(device, host) < 1e-3 * distance(host, initial)
    assert host_losses[-1] < host_losses[0]


def test_both_loop_forms_run_the_per_device_step_alike_on_two_devices(data_dir):
    # BatchNorm groups of 8 rows, 16 rows per device: each device runs its share alone, inside the
    # device loop's scan as in the host loop's steps.
    result = run_python(f"""
        import sys
        import jax, numpy as np
        from mnist_jax import config
        from mnist_jax.data import dataset
        from mnist_jax.training import parallel
        from mnist_jax.training.loops import DeviceLoop, HostLoop, run_keys
        from mnist_jax.training.step import StepOptions, create_train_state, steps_per_epoch

        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_loops import run_segments

        cfg = config.get_preset("tiny").replace(model={{"norm": "batch", "norm_group": 8}}, data={{"train_size": 640}},
                                                 train={{"batch_size": 32, "epochs": 2, "chunk_steps": 7,
                                                         "checkpoint_every": 5}})
        mesh, keys = parallel.data_mesh(), run_keys(0)
        assert mesh.devices.size == 2 and StepOptions.of(cfg, mesh).per_device is mesh
        train = dataset.split(dataset.load({str(data_dir)!r}), cfg.data).train
        results = []
        for form in (HostLoop, DeviceLoop):
            state = jax.device_put(create_train_state(cfg, keys["init"]), parallel.replicated(mesh))
            state, losses = run_segments(form(cfg, train, keys, mesh), cfg, state, 2 * steps_per_epoch(cfg))
            results.append((losses, jax.device_get((state.params, state.batch_stats))))
        (host_losses, host), (device_losses, device) = results
        np.testing.assert_allclose(device_losses, host_losses, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(device), jax.tree.leaves(host), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        assert host_losses[-1] < host_losses[0]
        print("alike", len(host_losses))
    """, {"JAX_NUM_CPU_DEVICES": "2"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["alike", "40"]


def trained_variables(state):
    return state.params, state.batch_stats, state.ema_params


def distance(a, b) -> float:
    """The Euclidean distance between two pytrees of arrays of the same structure, in float64."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return float(np.sqrt(sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2) for x, y in pairs)))


def test_auto_picks_the_host_loop_on_cpu(splits):
    assert jax.default_backend() == "cpu"
    assert isinstance(make_loop(SMALL, splits.train, run_keys(0), parallel.data_mesh()), HostLoop)
    assert isinstance(make_loop(SMALL.replace(train={"loop": "device"}), splits.train, run_keys(0),
                                 parallel.data_mesh()), DeviceLoop)


@pytest.mark.parametrize("loop", ["host", "device"])
def test_nothing_compiles_after_the_first_epoch(tmp_path, splits, loop):
    compiles, counting = [], []

    def listener(event, duration, **kwargs):
        if counting and event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)

    def log(line):
        if line.startswith("epoch 1/"):
            counting.append(True)  # epoch 2's steps, its validation and its checkpoint must reuse everything
        elif line.startswith("epoch 2/"):
            counting.clear()

    # With augmentation on: its random transforms must not retrace the step either.
    config = SMALL.replace(train={"loop": loop, "checkpoint_every": 5},
                           augment={"rotation": 10.0, "translation": 2.0, "elastic_alpha": 8.0})
    trainer.train_and_evaluate(config, tmp_path / "run", splits, log=log)
    assert not counting, "the run did not log both epochs"
    assert compiles == []


@pytest.mark.parametrize("loop", ["host", "device"])
def test_the_loop_makes_no_implicit_transfers(splits, loop):
    config = SMALL.replace(train={"loop": loop})
    keys = run_keys(0)
    runner = make_loop(config, splits.train, keys, parallel.data_mesh())
    state = create_train_state(config, keys["init"])
    state, _ = run_segments(runner, config, state, 20)  # compile outside the guard
    count = segment_length(20, steps_per_epoch(config), 0, runner.limit)
    # The host loop copies each batch explicitly; the device loop copies nothing to the device at all.
    to_device = "disallow" if loop == "host" else "disallow_explicit"
    with jax.transfer_guard_host_to_device(to_device), jax.transfer_guard_device_to_host("disallow"), \
            jax.transfer_guard_device_to_device("disallow"):
        state, metrics = runner.run(state, 20, count)
        jax.block_until_ready(state)
    assert jax.device_get(metrics["loss"]).shape == (count,)
    with jax.transfer_guard("disallow"):
        assert 0 < evaluate(state, splits.validation.images, splits.validation.labels, 1000)["accuracy"] <= 1
