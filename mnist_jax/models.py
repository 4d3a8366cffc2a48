"""Flax linen models, built from a `ModelConfig`."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_jax.config import ModelConfig

NUM_CLASSES = 10


class CNN(nn.Module):
    """Conv -> ReLU -> 2x2 pool blocks, then dense -> ReLU -> dropout layers, then logits.

    Call with images float32 (B, 28, 28, 1) in [0, 1]; returns logits float32 (B, 10).
    Dropout needs an rng named "dropout" when `train=True`. With `dtype` bfloat16 the layers
    compute in bfloat16 while their parameters (and so the optimizer) stay float32.
    """

    conv_features: Sequence[int] = (32, 64)
    kernel_sizes: Sequence[int] = (5, 3)
    strides: Sequence[int] = ()  # empty: 1 for every conv
    pool: str = "avg"
    dense_features: Sequence[int] = (256,)
    dropout: float = 0.25
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        dtype = jnp.dtype(self.dtype)
        x = images.astype(dtype)
        strides = self.strides or (1,) * len(self.conv_features)
        for features, size, stride in zip(self.conv_features, self.kernel_sizes, strides, strict=True):
            x = nn.relu(nn.Conv(features, (size, size), strides=(stride, stride), dtype=dtype)(x))
            if self.pool == "avg":
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            elif self.pool == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for features in self.dense_features:
            x = nn.relu(nn.Dense(features, dtype=dtype)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(NUM_CLASSES, dtype=dtype)(x).astype(jnp.float32)  # the loss and softmax run in float32


def create_model(config: ModelConfig) -> CNN:
    """Returns the CNN that `config` describes."""
    return CNN(
        conv_features=config.conv_features,
        kernel_sizes=config.kernel_sizes,
        strides=config.strides,
        pool=config.pool,
        dense_features=config.dense_features,
        dropout=config.dropout,
        dtype=config.dtype,
    )


def init_params(model: nn.Module, rng: jax.Array) -> dict:
    """Returns the model's freshly initialised parameters (a pytree of float32 arrays).

    Jitted: run eagerly, each of init's many small ops is compiled on its own (about 3 s of CPU).
    """
    return jax.jit(model.init)(rng, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
