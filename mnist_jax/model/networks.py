"""Flax linen models, built from a `ModelConfig`: a plain CNN and a small ResNet."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_jax.config import ModelConfig

BATCH_NORM_EPSILON = 1e-5  # added to the variance (flax's default, named here for the ONNX export)


class BatchNorm(nn.Module):
    """Batch normalisation (Ioffe & Szegedy 2015) with flax's variables: "params" scale and bias (C,),
    "batch_stats" mean and var (C,), and flax's formulas, but normalising in training by the statistics of
    groups of `group_size` images of the batch ("ghost batches", Hoffer et al. 2017; 0: the whole batch).

    Call with x (B, ..., C), B a multiple of `group_size`; returns x normalised, same shape, in `dtype`.
    A group that lies on one device is normalised there: data parallelism then needs no collective
    between the layers, only the gradients' (see docs/speed.md). The running statistics move towards
    the groups' statistics averaged over the groups. Named as flax's layer is, so that flax names the
    layers BatchNorm_0, BatchNorm_1, ... as before: checkpoints and the ONNX export find them by name.
    """

    use_running_average: bool
    group_size: int = 0
    momentum: float = 0.9
    epsilon: float = BATCH_NORM_EPSILON
    dtype: jnp.dtype = jnp.float32
    scale_init: nn.initializers.Initializer = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
            y = x - mean
        else:
            size = self.group_size or x.shape[0]
            groups = x.astype(jnp.float32).reshape((x.shape[0] // size, size, *x.shape[1:]))  # (G, B / G, ..., C)
            axes = tuple(range(1, groups.ndim - 1))
            mean = groups.mean(axes, keepdims=True)
            var = jnp.maximum(0.0, jnp.square(groups).mean(axes, keepdims=True) - jnp.square(mean))
            if not self.is_initializing():
                decay = self.momentum
                running_mean.value = decay * running_mean.value + (1 - decay) * mean.reshape(-1, features).mean(0)
                running_var.value = decay * running_var.value + (1 - decay) * var.reshape(-1, features).mean(0)
            y = groups - mean
        y = y * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return jnp.asarray(y.reshape(x.shape), self.dtype)


def batch_norm(train: bool, group_size: int = 0, **kwargs) -> BatchNorm:
    """Returns a BatchNorm layer that normalises by the batch (in groups of `group_size` images, 0: all of it)
    when `train`, else by its running statistics."""
    return BatchNorm(use_running_average=not train, group_size=group_size, **kwargs)


class CNN(nn.Module):
    """Conv -> [BatchNorm ->] ReLU -> 2x2 pool blocks, then dense -> ReLU -> dropout layers, then logits.

    Call with images float32 (B, 28, 28, 1) in [0, 1]; returns logits float32 (B, num_classes).
    Dropout needs an rng named "dropout" when `train=True`; with `norm` "batch", BatchNorm
    updates the "batch_stats" collection then (apply with mutable=["batch_stats"]). With `dtype`
    bfloat16 the layers compute in bfloat16 while their parameters (and so the optimizer) stay float32.
    """

    num_classes: int = 10
    conv_features: Sequence[int] = (32, 64)
    kernel_sizes: Sequence[int] = (5, 3)
    strides: Sequence[int] = ()  # empty: 1 for every conv
    pool: str = "avg"
    dense_features: Sequence[int] = (256,)
    dropout: float = 0.25
    norm: str = "none"
    norm_group: int = 0  # BatchNorm's training statistics per group of this many images (0: the whole batch)
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        dtype = jnp.dtype(self.dtype)
        x = images.astype(dtype)
        strides = self.strides or (1,) * len(self.conv_features)
        for features, size, stride in zip(self.conv_features, self.kernel_sizes, strides, strict=True):
            x = nn.Conv(features, (size, size), strides=(stride, stride), use_bias=self.norm == "none", dtype=dtype)(x)
            if self.norm == "batch":
                x = batch_norm(train, self.norm_group, dtype=dtype)(x)
            x = nn.relu(x)
            if self.pool == "avg":
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            elif self.pool == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for features in self.dense_features:
            x = nn.relu(nn.Dense(features, dtype=dtype)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=dtype)(x).astype(jnp.float32)  # the loss and softmax run in float32


class ResidualBlock(nn.Module):
    """Two 3x3 conv -> BatchNorm layers plus a shortcut (He et al. 2016); `strides` 2 halves the resolution."""

    features: int
    strides: int = 1
    norm_group: int = 0  # see CNN

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        norm = functools.partial(batch_norm, train, self.norm_group)
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)  # each block starts as the identity
        if x.shape != y.shape:
            x = norm()(nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A 3x3 conv stem, then stages of residual blocks, global average pooling, dropout and logits.

    Every stage starts with a stride-2 block (28 -> 14 -> 7 -> 4): full-resolution blocks cost
    4x more, and strided convs are cheaper than max-pooling on XLA:CPU. Call with images float32
    (B, 28, 28, 1) in [0, 1]; returns logits (B, num_classes). With `train=True` BatchNorm normalises by
    the batch and updates the "batch_stats" collection (apply with mutable=["batch_stats"]), and
    dropout needs an rng named "dropout".
    """

    num_classes: int = 10
    stage_features: Sequence[int] = (32, 64)
    blocks_per_stage: int = 2
    dropout: float = 0.25
    norm_group: int = 0  # see CNN

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        x = nn.Conv(self.stage_features[0], (3, 3), use_bias=False)(images)
        x = nn.relu(batch_norm(train, self.norm_group)(x))
        for features in self.stage_features:
            for block in range(self.blocks_per_stage):
                x = ResidualBlock(features, strides=2 if block == 0 else 1, norm_group=self.norm_group)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


def create_model(config: ModelConfig, num_classes: int = 10) -> nn.Module:
    """Returns the model (`config.name`: "cnn" or "resnet") that `config` describes, with `num_classes`
    logits (the data set's, `DataConfig.spec.num_classes`)."""
    if config.name == "resnet":
        return ResNet(num_classes=num_classes, stage_features=config.stage_features,
                      blocks_per_stage=config.blocks_per_stage, dropout=config.dropout, norm_group=config.norm_group)
    return CNN(
        num_classes=num_classes,
        conv_features=config.conv_features,
        kernel_sizes=config.kernel_sizes,
        strides=config.strides,
        pool=config.pool,
        dense_features=config.dense_features,
        dropout=config.dropout,
        norm=config.norm,
        norm_group=config.norm_group,
        dtype=config.dtype,
    )


def init_variables(model: nn.Module, rng: jax.Array) -> dict:
    """Returns the model's fresh variables: {"params"} and, for models with BatchNorm, {"batch_stats"}.

    Jitted: run eagerly, each of init's many small ops is compiled on its own (about 3 s of CPU).
    """
    return dict(jax.jit(model.init)(rng, jnp.zeros((1, 28, 28, 1), jnp.float32)))


def init_params(model: nn.Module, rng: jax.Array) -> dict:
    """Returns the model's freshly initialised parameters (a pytree of float32 arrays)."""
    return init_variables(model, rng)["params"]
