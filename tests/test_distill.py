"""Distillation: the teachers' probabilities reach the loss, and teachers that cannot be used are refused."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from conftest import run_tool

from mnist_jax import config as config_lib
from mnist_jax.checkpoint import restore
from mnist_jax.distill import teacher_probabilities
from mnist_jax.predict import predict
from mnist_jax.train import create_train_state, scale_images, train_step


def test_teacher_probabilities_are_the_teachers_mean_raw_softmax(trained_run, mnist):
    teachers = f"{trained_run.path},{trained_run.path}"
    config = config_lib.override(config_lib.get_preset("tiny"), {"train.teachers": teachers,
                                                                  "train.distillation": "1"})
    images, labels = mnist.train_images[:500], mnist.train_labels[:500].astype(np.int32)
    lines = []
    probabilities = teacher_probabilities(config, images, labels, lines.append)
    teacher = restore(trained_run.path)
    assert probabilities.shape == (500, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, predict(teacher.state, images), rtol=1e-5, atol=1e-7)
    assert teacher.temperature != 1.0  # so the raw softmax differs from the calibrated one
    assert not np.allclose(probabilities, predict(teacher.state, images, temperature=teacher.temperature))
    right = np.mean(probabilities.argmax(axis=1) == labels)
    assert right > 0.9
    assert lines[0].startswith(f"teachers: 2 runs, {100 * right:.2f}% right on the 500 training images")


def test_with_full_distillation_a_step_fits_the_teachers_probabilities_and_ignores_the_labels(trained_run, mnist):
    # No dropout, BatchNorm or augmentation: train logits = eval logits.
    config = config_lib.override(config_lib.get_preset("tiny"), {"train.schedule": "constant",
                                                                  "train.learning_rate": "3e-3"})
    images, labels = mnist.train_images[:128], mnist.train_labels[:128].astype(np.int32)
    teacher = predict(restore(trained_run.path).state, images)
    initial = create_train_state(config, jax.random.key(0))
    for _ in range(20):  # plain steps first, so the logits are far from uniform
        initial, _ = train_step(initial, {"image": images, "label": labels}, jax.random.key(1))
    logits = initial.apply_fn({"params": initial.params}, scale_images(images), train=False)
    expected = float(np.mean(-np.sum(teacher * np.asarray(jax.nn.log_softmax(logits)), axis=1)))
    wrong = (labels + 1) % 10
    losses, compiled = [], []
    for shown in (labels, wrong):  # at distillation 1 the labels carry no weight
        state = jax.tree.map(jnp.copy, initial)  # a copy, since the step donates its state
        state, metrics = train_step(state, {"image": images, "label": shown, "teacher": teacher},
                                    jax.random.key(1), distillation=1.0)
        losses.append(float(metrics["loss"]))
        compiled.append(train_step._cache_size())
    assert compiled[1] == compiled[0]  # the second labels reused the first compile
    np.testing.assert_allclose(losses, [expected, expected], rtol=1e-5)
    state, plain = train_step(initial, {"image": images, "label": wrong}, jax.random.key(1))
    assert float(plain["loss"]) > expected + 1.0


def test_train_cli_distills_a_run_and_refuses_teachers_it_cannot_use(trained_run, data_dir, tmp_path):
    common = ["--preset", "tiny", "--data.train_size", "2000", "--train.distillation", "0.9",
              "--data-dir", str(data_dir), "--data-source", "prepared", "--runs-dir", str(tmp_path)]
    result = run_tool("train", *common, "--train.teachers", str(trained_run.path), "--workdir", str(tmp_path / "kd"))
    assert result.returncode == 0, result.stderr
    assert "teachers: 1 run, " in result.stdout
    saved = json.loads((tmp_path / "kd" / "config.json").read_text())["train"]
    assert saved["teachers"] == [str(trained_run.path)] and saved["distillation"] == 0.9
    assert json.loads((tmp_path / "kd" / "summary.json").read_text())["test_accuracy"] > 0.5

    # A teacher that trained on this run's validation images would leak them into checkpoint selection.
    leaky = run_tool("train", *common, "--train.teachers", str(trained_run.path), "--data.validation_size", "6000",
                     "--workdir", str(tmp_path / "leaky"))
    missing = run_tool("train", *common, "--train.teachers", str(tmp_path / "nowhere"),
                       "--workdir", str(tmp_path / "missing"))
    assert leaky.stderr.strip() == (f"error: teacher {trained_run.path} trained on images this run validates on "
                                    "(its data.validation_size 5000 < 6000); distill only from runs that held out "
                                    "at least as many")
    assert missing.stderr.strip() == (f"error: teacher {tmp_path / 'nowhere'} (train.teachers) does not exist; "
                                      "name run directories written by bin/train")
    for refused, name in ((leaky, "leaky"), (missing, "missing")):
        assert refused.returncode != 0
        assert not (tmp_path / name / "config.json").exists()
