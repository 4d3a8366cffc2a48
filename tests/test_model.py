"""The CNN has the shapes and the exact parameter count its config promises."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import config as config_lib
from mnist_jax.model.networks import BATCH_NORM_EPSILON, BatchNorm, create_model, init_params, init_variables


def count(params) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_default_preset_has_the_exact_parameter_count():
    params = init_params(create_model(config_lib.get_preset("default").model), jax.random.key(0))
    conv1 = 5 * 5 * 1 * 32 + 32
    conv2 = 3 * 3 * 32 * 64 + 64
    dense = (7 * 7 * 64) * 256 + 256  # two 2x2 pools: 28 -> 14 -> 7
    logits = 256 * 10 + 10
    assert count(params) == conv1 + conv2 + dense + logits == 824_970
    assert params["Conv_0"]["kernel"].shape == (5, 5, 1, 32)
    assert params["Dense_1"]["kernel"].shape == (256, 10)


def test_output_is_logits_for_ten_classes_and_dropout_only_in_training():
    model = create_model(config_lib.get_preset("default").model)
    params = init_params(model, jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
    logits = model.apply({"params": params}, images)
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, model.apply({"params": params}, images, train=False))
    train_a = model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(2)})
    train_b = model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train_a, train_b)


def test_architecture_follows_the_config():
    config = config_lib.override(config_lib.get_preset("default"), {
        "model.conv_features": "4,8,16", "model.kernel_sizes": "3,3,3", "model.pool": "max",
        "model.dense_features": "32,16",
    })
    params = init_params(create_model(config.model), jax.random.key(0))
    assert sorted(params) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1", "Dense_2"]
    assert params["Dense_0"]["kernel"].shape == (3 * 3 * 16, 32)  # 28 -> 14 -> 7 -> 3
    no_pool = config_lib.override(config, {"model.pool": "none"})
    assert init_params(create_model(no_pool.model), jax.random.key(0))["Dense_0"]["kernel"].shape == (28 * 28 * 16, 32)


def test_strided_convs_downsample_without_pooling():
    config = config_lib.override(config_lib.get_preset("default"), {
        "model.conv_features": "8,16,32", "model.kernel_sizes": "5,3,3", "model.strides": "2,2,2",
        "model.pool": "none", "model.dense_features": "16",
    })
    params = init_params(create_model(config.model), jax.random.key(0))
    assert params["Dense_0"]["kernel"].shape == (4 * 4 * 32, 16)  # "SAME" stride 2: 28 -> 14 -> 7 -> 4


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_parameters_through_a_train_step(mnist):
    from mnist_jax.training.step import create_train_state, train_step

    fp32 = config_lib.override(config_lib.get_preset("tiny"), {"train.learning_rate": "1e-3"})
    bf16 = config_lib.override(fp32, {"model.dtype": "bfloat16"})
    batch = {"image": mnist.train_images[:128], "label": mnist.train_labels[:128].astype(np.int32)}
    images = batch["image"].astype(np.float32) / 255
    states = {name: create_train_state(config, jax.random.key(0)) for name, config in (("fp32", fp32), ("bf16", bf16))}
    logits = {name: state.apply_fn({"params": state.params}, images) for name, state in states.items()}
    assert logits["bf16"].dtype == jnp.float32
    assert not np.array_equal(logits["bf16"], logits["fp32"])  # really computed in lower precision
    np.testing.assert_allclose(logits["bf16"], logits["fp32"], atol=0.05)
    assert "bf16" in str(jax.make_jaxpr(states["bf16"].apply_fn)({"params": states["bf16"].params}, images))
    state, metrics = train_step(states["bf16"], batch, jax.random.key(1))
    assert {str(leaf.dtype) for leaf in jax.tree.leaves((state.params, state.opt_state))} == {"float32", "int32"}
    assert np.isfinite(float(metrics["loss"]))


def test_resnet_halves_the_resolution_per_stage_and_carries_batchnorm_statistics():
    config = config_lib.override(config_lib.get_preset("default"), {
        "model.name": "resnet", "model.stage_features": "8,16,24", "model.blocks_per_stage": "2"})
    model = create_model(config.model)
    variables = init_variables(model, jax.random.key(0))
    params, stats = variables["params"], variables["batch_stats"]
    assert sorted(k for k in params if k.startswith("ResidualBlock")) == [f"ResidualBlock_{i}" for i in range(6)]
    assert params["Dense_0"]["kernel"].shape == (24, 10)  # global average pool over the last stage's channels
    assert params["ResidualBlock_1"]["Conv_0"]["kernel"].shape == (3, 3, 8, 8)
    assert "Conv_2" in params["ResidualBlock_2"] and "Conv_2" not in params["ResidualBlock_3"]  # projection shortcut
    np.testing.assert_array_equal(stats["BatchNorm_0"]["var"], np.ones(8))
    images = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
    features = model.apply(variables, images, capture_intermediates=True)[1]["intermediates"]
    assert [features[f"ResidualBlock_{i}"]["__call__"][0].shape[1] for i in range(0, 6, 2)] == [14, 7, 4]
    assert_batchnorm_trains_by_the_batch_and_infers_by_running_statistics(model, variables, images)


def test_cnn_with_batchnorm_normalises_every_conv_without_its_bias(mnist):
    from mnist_jax.training.step import scale_images

    config = config_lib.override(config_lib.get_preset("tiny"), {"model.norm": "batch"})
    model = create_model(config.model)
    variables = init_variables(model, jax.random.key(0))
    assert sorted(variables["batch_stats"]) == ["BatchNorm_0", "BatchNorm_1"]
    assert sorted(variables["params"]["Conv_1"]) == ["kernel"]  # BatchNorm's shift replaces the bias
    assert variables["params"]["BatchNorm_1"]["scale"].shape == (16,)
    images = scale_images(mnist.train_images[:6])
    assert_batchnorm_trains_by_the_batch_and_infers_by_running_statistics(model, variables, images)
    # A train step advancing these statistics, and evaluation using them: test_train.py.


def assert_batchnorm_trains_by_the_batch_and_infers_by_running_statistics(model, variables, images):
    logits, updates = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)},
                                  mutable=["batch_stats"])
    assert logits.shape == (len(images), 10)
    moved = updates["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(moved, variables["batch_stats"]["BatchNorm_0"]["mean"])
    # Inference normalises by the running statistics: it is deterministic and batch-independent.
    alone = model.apply(variables, images[:1])
    np.testing.assert_allclose(model.apply(variables, images)[:1], alone, rtol=1e-5, atol=1e-6)


def batch_norm_pass(module: nn.Module, variables: dict, x: jax.Array) -> tuple[np.ndarray, dict]:
    """One training pass of a BatchNorm layer: (normalised x, its new running statistics)."""
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    return np.asarray(y), jax.tree.map(np.asarray, updates["batch_stats"])


def test_batchnorm_over_the_whole_batch_is_flaxs_batchnorm():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (12, 5, 5, 4))
    ours = BatchNorm(use_running_average=False)
    flax_own = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=BATCH_NORM_EPSILON)
    variables = ours.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, flax_own.init(jax.random.key(1), x))
    variables = {"params": {"scale": jnp.arange(1.0, 5.0), "bias": jnp.arange(4.0)}, **variables}
    y, stats = batch_norm_pass(ours, variables, x)
    expected_y, expected_stats = batch_norm_pass(flax_own, variables, x)
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stats, expected_stats)
    inference = {**variables, "batch_stats": stats}
    np.testing.assert_allclose(BatchNorm(use_running_average=True).apply(inference, x),
                               nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON).apply(inference, x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group_size", [4, 6])
def test_batchnorm_groups_are_each_normalised_alone(group_size):
    # Groups with different means and spreads: one normalisation over the batch would leave them apart.
    x = jnp.concatenate([shift + (1 + shift) * jax.random.normal(jax.random.key(shift), (group_size, 3, 3, 2))
                         for shift in range(12 // group_size)])
    grouped, whole = BatchNorm(use_running_average=False, group_size=group_size), BatchNorm(use_running_average=False)
    variables = whole.init(jax.random.key(1), x)
    y, stats = batch_norm_pass(grouped, variables, x)
    alone = [batch_norm_pass(whole, variables, x[start : start + group_size]) for start in range(0, 12, group_size)]
    np.testing.assert_allclose(y, np.concatenate([y for y, _ in alone]), rtol=1e-5, atol=1e-5)
    for name in ("mean", "var"):  # the running statistics move towards the groups' mean statistics
        np.testing.assert_allclose(stats[name], np.mean([s[name] for _, s in alone], axis=0), rtol=1e-5)
    assert not np.allclose(y, batch_norm_pass(whole, variables, x)[0], atol=1e-2)
