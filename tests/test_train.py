"""The jitted train and eval steps learn, stay pure, and compile once per shape."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from mnist_jax import config as config_lib
from mnist_jax.inference.predict import predict_probs
from mnist_jax.training.loops import epoch_order, run_keys
from mnist_jax.training.step import create_train_state, cross_entropy_loss, eval_step, evaluate, train_step


@pytest.fixture(scope="module")
def config():
    return config_lib.get_preset("default")


@pytest.fixture(scope="module")
def batch(mnist):
    return {"image": mnist.train_images[:128], "label": mnist.train_labels[:128].astype(np.int32)}


def test_train_step_lowers_the_loss_on_a_fixed_batch_and_traces_once(config, batch):
    constant = config_lib.override(config, {"train.schedule": "constant", "train.learning_rate": "1e-3"})
    state = create_train_state(constant, jax.random.key(0))
    rng = jax.random.key(1)
    state, first = train_step(state, batch, rng)
    compiled = train_step._cache_size()
    losses = [float(first["loss"])]
    for _ in range(30):
        state, metrics = train_step(state, batch, rng)
        losses.append(float(metrics["loss"]))
    assert train_step._cache_size() == compiled  # no retrace after the first step
    assert int(state.step) == 31
    assert losses[-1] < 0.5 * losses[0]
    assert float(metrics["accuracy"]) > 0.9


def test_train_step_is_a_pure_function_of_state_batch_and_key(config, batch):
    def one_step(seed):
        state = create_train_state(config, jax.random.key(0))
        state, metrics = train_step(state, batch, jax.random.key(seed))
        return jax.device_get(state.params), float(metrics["loss"])

    params_a, loss_a = one_step(1)
    params_b, loss_b = one_step(1)
    params_c, loss_c = one_step(2)
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    assert loss_a == loss_b
    assert loss_a != loss_c  # the key drives dropout


def test_evaluate_matches_a_direct_computation_and_eval_step_traces_once(config, mnist):
    state = create_train_state(config, jax.random.key(0))
    images, labels = mnist.test_images[:2500], mnist.test_labels[:2500].astype(np.int32)
    evaluate(state, images[:1000], labels[:1000], batch_size=1000)
    compiled = eval_step._cache_size()
    result = evaluate(state, images, labels, batch_size=1000)  # 1000, 1000, then 500 padded rows
    assert eval_step._cache_size() == compiled
    logits = state.apply_fn({"params": state.params}, images.astype(np.float32) / 255)
    log_probs = jax.nn.log_softmax(logits)
    expected_loss = -float(np.mean(np.take_along_axis(np.asarray(log_probs), labels[:, None], 1)))
    expected_accuracy = float(np.mean(np.argmax(logits, -1) == labels))
    assert result["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_run_randomness_derives_from_the_seed_and_epoch():
    keys = run_keys(0)
    order = epoch_order(keys["order"], 1, 1000)
    assert sorted(order.tolist()) == list(range(1000))
    np.testing.assert_array_equal(order, epoch_order(run_keys(0)["order"], 1, 1000))
    assert not np.array_equal(order, epoch_order(keys["order"], 2, 1000))
    assert not np.array_equal(order, epoch_order(run_keys(1)["order"], 1, 1000))


def test_ema_after_two_steps_equals_the_hand_computation(batch):
    config = config_lib.override(config_lib.get_preset("tiny"), {"train.ema": "0.5"})
    state = create_train_state(config, jax.random.key(0))
    params = [jax.device_get(state.params)]
    np.testing.assert_array_equal(state.ema_params["Dense_1"]["bias"], params[0]["Dense_1"]["bias"])
    for _ in range(2):
        state, _ = train_step(state, batch, jax.random.key(1))
        params.append(jax.device_get(state.params))
    # Steps 0 and 1 decay by min(0.5, (1 + t) / (10 + t)) = 1/10 and 2/11.
    expected = jax.tree.map(lambda p0, p1, p2: 2 / 11 * (0.1 * p0 + 0.9 * p1) + 9 / 11 * p2, *params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), state.ema_params, expected)
    # From step 8 on the configured decay holds: 0.5 * average + 0.5 * new params.
    state = state.replace(step=jax.numpy.int32(8))
    average = jax.device_get(state.ema_params)
    state, _ = train_step(state, batch, jax.random.key(1))
    expected = jax.tree.map(lambda a, p: 0.5 * a + 0.5 * p, average, jax.device_get(state.params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), state.ema_params, expected)
    assert not np.allclose(state.ema_params["Dense_1"]["kernel"], state.params["Dense_1"]["kernel"])
    # Evaluation and prediction apply the EMA params, not the trained ones.
    images = batch["image"][:8]
    ema_only = state.replace(params=state.ema_params, ema_params={})
    np.testing.assert_array_equal(predict_probs(state, images), predict_probs(ema_only, images))
    without_ema = state.replace(ema_params={})
    assert not np.allclose(predict_probs(state, images), predict_probs(without_ema, images))
    assert create_train_state(config_lib.get_preset("tiny"), jax.random.key(0)).ema_params == {}


def test_label_smoothing_zero_is_the_plain_loss_and_otherwise_follows_the_formula(mnist):
    logits = jax.random.normal(jax.random.key(0), (16, 10)) * 3
    labels = mnist.train_labels[:16].astype(np.int32)
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_array_equal(cross_entropy_loss(logits, labels, 0.0), plain)
    np.testing.assert_array_equal(cross_entropy_loss(logits, labels), plain)
    smoothing = 0.1
    targets = (1 - smoothing) * np.eye(10)[labels] + smoothing / 10
    expected = -np.sum(targets * np.asarray(jax.nn.log_softmax(logits)), axis=1)
    np.testing.assert_allclose(cross_entropy_loss(logits, labels, smoothing), expected, rtol=1e-5)
    assert np.all(np.asarray(cross_entropy_loss(logits, labels, smoothing)) != np.asarray(plain))


def test_distillation_mixes_the_teachers_probabilities_into_the_smoothed_targets(mnist):
    logits = jax.random.normal(jax.random.key(0), (16, 10)) * 3
    teacher = jax.nn.softmax(jax.random.normal(jax.random.key(1), (16, 10)) * 2)
    labels = mnist.train_labels[:16].astype(np.int32)
    smoothing, weight = 0.1, 0.5
    targets = (1 - weight) * ((1 - smoothing) * np.eye(10)[labels] + smoothing / 10) + weight * np.asarray(teacher)
    expected = -np.sum(targets * np.asarray(jax.nn.log_softmax(logits)), axis=1)
    np.testing.assert_allclose(cross_entropy_loss(logits, labels, smoothing, teacher, weight), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="distillation needs the teachers' probabilities"):
        cross_entropy_loss(logits, labels, smoothing, None, weight)


@pytest.mark.parametrize("model", [
    {"model.name": "resnet", "model.stage_features": "8,16", "model.blocks_per_stage": "1"},
    {"model.norm": "batch"},
], ids=["resnet", "cnn-batchnorm"])
def test_a_batchnorm_step_advances_the_statistics_that_evaluation_uses(batch, model):
    config = config_lib.override(config_lib.get_preset("tiny"), model)
    state = create_train_state(config, jax.random.key(0))
    initial = jax.device_get(state.batch_stats)
    state, metrics = train_step(state, batch, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    moved = jax.device_get(state.batch_stats)
    assert not np.allclose(moved["BatchNorm_0"]["mean"], initial["BatchNorm_0"]["mean"])
    images = batch["image"][:8]
    expected = jax.nn.softmax(state.apply_fn({"params": state.params, "batch_stats": moved},
                                             images.astype(np.float32) / 255, train=False))
    np.testing.assert_allclose(predict_probs(state, images), expected, rtol=1e-5, atol=1e-7)
    stale = jax.nn.softmax(state.apply_fn({"params": state.params, "batch_stats": initial},
                                          images.astype(np.float32) / 255, train=False))
    assert not np.allclose(stale, expected, atol=1e-4)
