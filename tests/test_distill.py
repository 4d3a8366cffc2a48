"""Distillation: the teachers' probabilities reach the loss, are kept for resuming, and teachers that
cannot be used are refused."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_tool

from mnist_jax import config as config_lib
from mnist_jax.cli.advice import advice
from mnist_jax.data import dataset
from mnist_jax.data.augment import augment
from mnist_jax.errors import TeacherError
from mnist_jax.inference.predict import predict
from mnist_jax.run_dir import RunDir
from mnist_jax.training import trainer
from mnist_jax.training.checkpoint import restore
from mnist_jax.training.step import StepOptions, create_train_state, scale_images, train_step
from mnist_jax.training.teachers import (
    keep_teacher_steps,
    keep_teachers,
    teacher_probabilities,
    teacher_states,
    teacher_targets,
)

TINY = config_lib.get_preset("tiny")

TEACHERS = RunDir(".").teacher_probabilities.name
TEACHER_STEPS = RunDir(".").teacher_steps.name


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory, mnist):
    """Another real run, of another architecture: the tiny preset, one epoch on 2,000 images."""
    config = TINY.replace(data={"train_size": 2000})
    path = tmp_path_factory.mktemp("teacher") / "tiny"
    trainer.train_and_evaluate(config, path, dataset.split(mnist, config.data), log=lambda line: None)
    return path


def distilled(*teachers, views: str = "clean") -> config_lib.Config:
    return config_lib.override(TINY, {"train.teachers": ",".join(map(str, teachers)), "train.distillation": "1",
                                      "train.teacher_views": views})


def test_teacher_probabilities_are_the_teachers_mean_raw_softmax(trained_run, second_teacher, mnist, tmp_path):
    images, labels = mnist.train_images[:500], mnist.train_labels[:500].astype(np.int32)
    lines = []
    probabilities = teacher_probabilities(distilled(trained_run.path, second_teacher), images, labels, tmp_path,
                                          lines.append)
    teachers = [restore(trained_run.path), restore(second_teacher)]
    raw = [predict(teacher.state, images) for teacher in teachers]
    assert probabilities.shape == (500, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, (raw[0] + raw[1]) / 2, rtol=1e-5, atol=1e-7)
    assert not np.allclose(probabilities, raw[0], atol=1e-3)  # both teachers count
    calibrated = [predict(teacher.state, images, temperature=teacher.temperature) for teacher in teachers]
    assert not np.allclose(probabilities, (calibrated[0] + calibrated[1]) / 2, atol=1e-3)
    right = np.mean(probabilities.argmax(axis=1) == labels)
    assert right > 0.8
    assert lines[0].startswith(f"teachers: 2 runs, {100 * right:.2f}% right on the 500 training images")


def test_a_run_cannot_teach_itself(trained_run, mnist):
    with pytest.raises(TeacherError, match="is this run's own directory .*; a run cannot teach itself"):
        teacher_probabilities(distilled(trained_run.path), mnist.train_images[:10], mnist.train_labels[:10],
                              trained_run.path)


def test_kept_probabilities_are_reused_without_the_teachers_and_never_overwritten(tmp_path, mnist):
    split = dataset.Split(mnist.train_images[:50], mnist.train_labels[:50].astype(np.int32))
    kept = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(0), (50, 10))))
    keep_teachers(tmp_path, kept)
    keep_teachers(tmp_path, np.zeros_like(kept))  # a second start keeps the first start's file
    assert sorted(p.name for p in tmp_path.iterdir()) == [TEACHERS]
    # The teacher named here does not exist: computing anew would fail.
    gone = distilled(tmp_path / "gone-teacher")
    lines = []
    np.testing.assert_array_equal(teacher_targets(gone, tmp_path, split, lines.append), kept)
    assert lines == [f"teachers: their probabilities on the 50 training images read from {tmp_path / TEACHERS}"]
    fewer = dataset.Split(split.images[:40], split.labels[:40])
    with pytest.raises(TeacherError, match=r"holds probabilities of shape \(50, 10\), not \(40, 10\)"):
        teacher_targets(gone, tmp_path, fewer)
    (tmp_path / TEACHERS).write_bytes(b"not an array")
    with pytest.raises(TeacherError, match="cannot read the teachers' kept probabilities") as error:
        teacher_targets(gone, tmp_path, split)
    assert advice(error.value) == f"; delete {tmp_path / TEACHERS} to compute it again"


def test_with_full_distillation_a_step_fits_the_teachers_probabilities_and_ignores_the_labels(trained_run, mnist):
    # No dropout, BatchNorm or augmentation: train logits = eval logits.
    config = config_lib.override(TINY, {"train.schedule": "constant", "train.learning_rate": "3e-3"})
    images, labels = mnist.train_images[:128], mnist.train_labels[:128].astype(np.int32)
    teacher = predict(restore(trained_run.path).state, images)
    initial = create_train_state(config, jax.random.key(0))
    for _ in range(20):  # plain steps first, so the logits are far from uniform
        initial, _ = train_step(initial, {"image": images, "label": labels}, jax.random.key(1))
    logits = initial.apply_fn({"params": initial.params}, scale_images(images), train=False)
    expected = float(np.mean(-np.sum(teacher * np.asarray(jax.nn.log_softmax(logits)), axis=1)))
    wrong = (labels + 1) % 10
    losses = []
    for shown in (labels, wrong):  # at distillation 1 the labels carry no weight
        state = jax.tree.map(jnp.copy, initial)  # a copy, since the step donates its state
        state, metrics = train_step(state, {"image": images, "label": shown, "teacher": teacher},
                                    jax.random.key(1), StepOptions(distillation=1.0))
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses, [expected, expected], rtol=1e-5)
    state, plain = train_step(initial, {"image": images, "label": wrong}, jax.random.key(1))
    assert float(plain["loss"]) > expected + 1.0


def test_teachers_online_label_the_augmented_images_the_student_sees(trained_run, second_teacher, mnist):
    config = config_lib.override(TINY, {"augment.rotation": "15", "augment.translation": "2"})
    options = StepOptions(config.augment, label_smoothing=0.1, distillation=0.9)
    images, labels = mnist.train_images[:64], mnist.train_labels[:64].astype(np.int32)
    teachers = tuple(restore(path).state.replace(opt_state=None) for path in (trained_run.path, second_teacher))
    initial, rng = create_train_state(config, jax.random.key(0)), jax.random.key(1)
    # The distorted images the step trains on: augmentation's key as train.update derives it.
    seen = augment(scale_images(images), jax.random.fold_in(jax.random.fold_in(rng, initial.step), 1), config.augment)
    on_seen = sum(jax.nn.softmax(t.apply_fn({"params": t.ema_params or t.params}, seen, train=False))
                  for t in teachers) / 2
    on_clean = sum(predict(t, images) for t in teachers) / 2

    def step(batch, **kwargs):
        return train_step(jax.tree.map(jnp.copy, initial), batch, rng, options, **kwargs)  # the step donates

    online_state, online = step({"image": images, "label": labels}, teachers=teachers)
    given_state, given = step({"image": images, "label": labels, "teacher": on_seen})
    clean_state, _ = step({"image": images, "label": labels, "teacher": on_clean})
    np.testing.assert_allclose(float(online["loss"]), float(given["loss"]), rtol=1e-5)
    for online_leaf, given_leaf in zip(jax.tree.leaves(online_state.params), jax.tree.leaves(given_state.params),
                                       strict=True):
        np.testing.assert_allclose(online_leaf, given_leaf, rtol=1e-4, atol=1e-6)
    # Not the clean images' labels: those move the parameters elsewhere (the loss of a fresh student, near
    # uniform, hardly depends on its targets; its gradients do).
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(online_state.params),
                                                            jax.tree.leaves(clean_state.params), strict=True))
    assert moved > 1e-5
    state, _ = train_step(online_state, {"image": mnist.train_images[64:128], "label": labels}, rng, options,
                          teachers=teachers)
    compiled = train_step._cache_size()
    train_step(state, {"image": mnist.train_images[128:192], "label": labels}, rng, options, teachers=teachers)
    assert train_step._cache_size() == compiled  # the teachers are arguments: no retrace after the first step


def test_a_resumed_run_keeps_the_teacher_checkpoints_it_started_with(trained_run, tmp_path):
    config = distilled(trained_run.path, views="augmented")
    lines = []
    first = teacher_states(config, tmp_path, lines.append)
    best = restore(trained_run.path).step
    assert [run.step for run in first] == [best]
    assert lines == [f"teachers: 1 run label every augmented batch (checkpoint steps {best})"]
    keep_teacher_steps(config, tmp_path, first)
    kept = tmp_path / TEACHER_STEPS
    assert json.loads(kept.read_text()) == [{"run": str(trained_run.path), "step": best}]
    assert [run.step for run in teacher_states(config, tmp_path, lines.append)] == [best]
    assert lines[-1].endswith(f"(checkpoint steps {best}, kept in {kept})")
    kept.write_text(json.dumps([{"run": str(trained_run.path), "step": best + 1000}]))
    with pytest.raises(TeacherError, match=f"teacher .* no longer has checkpoint step {best + 1000}, which this "
                                           "run started with") as error:
        teacher_states(config, tmp_path)
    assert advice(error.value) == "; train the run again with --fresh"
    kept.write_text(json.dumps([{"run": "elsewhere", "step": best}]))
    with pytest.raises(TeacherError, match="names the teachers elsewhere, not train.teachers"):
        teacher_states(config, tmp_path)
    kept.write_text("{")
    with pytest.raises(TeacherError, match="cannot read the teachers' kept steps"):
        teacher_states(config, tmp_path)


def test_train_cli_distills_a_run_and_refuses_teachers_it_cannot_use(trained_run, data_dir, mnist, tmp_path):
    common = ["--preset", "tiny", "--data.train_size", "2000", "--train.distillation", "0.9",
              "--data-dir", str(data_dir), "--data-source", "prepared", "--runs-dir", str(tmp_path)]
    result = run_tool("train", *common, "--train.teachers", str(trained_run.path), "--workdir", str(tmp_path / "kd"))
    assert result.returncode == 0, result.stderr
    assert "teachers: 1 run, " in result.stdout
    saved = json.loads((tmp_path / "kd" / "config.json").read_text())["train"]
    assert saved["teachers"] == [str(trained_run.path.resolve())] and saved["distillation"] == 0.9
    assert json.loads((tmp_path / "kd" / "summary.json").read_text())["test_accuracy"] > 0.5
    # Kept for a resume, row for row with the run's training images.
    np.testing.assert_allclose(np.load(tmp_path / "kd" / TEACHERS),
                               predict(restore(trained_run.path).state, mnist.train_images[:2000]), rtol=1e-5,
                               atol=1e-7)

    # Teachers labelling the augmented views: the run keeps which checkpoints they are, and --fresh forgets it.
    online = ["--train.teachers", str(trained_run.path), "--train.teacher_views", "augmented",
              "--workdir", str(tmp_path / "online")]
    result = run_tool("train", *common, *online)
    assert result.returncode == 0, result.stderr
    best = restore(trained_run.path).step
    assert f"teachers: 1 run label every augmented batch (checkpoint steps {best})" in result.stdout
    assert json.loads((tmp_path / "online" / TEACHER_STEPS).read_text()) == [
        {"run": str(trained_run.path.resolve()), "step": best}]
    assert not (tmp_path / "online" / TEACHERS).exists()
    (tmp_path / "online" / TEACHER_STEPS).write_text(json.dumps([{"run": "elsewhere", "step": best}]))
    assert run_tool("train", *common, *online, "--fresh").returncode == 0
    assert json.loads((tmp_path / "online" / TEACHER_STEPS).read_text())[0]["run"] == str(trained_run.path.resolve())

    # A teacher that trained on this run's validation images would leak them into checkpoint selection.
    leaky = run_tool("train", *common, "--train.teachers", str(trained_run.path), "--data.validation_size", "6000",
                     "--workdir", str(tmp_path / "leaky"))
    missing = run_tool("train", *common, "--train.teachers", "nowhere", "--workdir", str(tmp_path / "missing"),
                       cwd=tmp_path)
    assert leaky.stderr.strip() == (f"error: teacher {trained_run.path.resolve()} trained on images this run "
                                    "validates on (its data.validation_size 5000 < 6000); distill only from runs "
                                    "that held out at least as many")
    assert missing.stderr.strip() == (f"error: teacher {(tmp_path / 'nowhere').resolve()} (train.teachers) is not a "
                                      "run directory")
    for refused, name in ((leaky, "leaky"), (missing, "missing")):
        assert refused.returncode != 0
        assert not (tmp_path / name / "config.json").exists()
