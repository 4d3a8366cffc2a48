"""mnist_jax: handwritten-digit recognition with JAX, Flax (linen), optax, tfds and Orbax.

The pure building blocks, for research code:

    config = mnist_jax.get_preset("default")
    state = mnist_jax.create_train_state(config, jax.random.key(0))
    state, metrics = mnist_jax.train_step(state, {"image": x_uint8, "label": y}, jax.random.key(1))
    probs = mnist_jax.predict(state, mnist_jax.to_mnist(gray_image)[None])
"""

from mnist_jax.checkpoint import restore as load_run
from mnist_jax.config import AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig, get_preset
from mnist_jax.errors import UserError
from mnist_jax.models import CNN, create_model, init_params
from mnist_jax.predict import predict, predict_probs
from mnist_jax.preprocess import load_grayscale, preprocess_file, to_mnist
from mnist_jax.temperature import fit_temperature, nll_by_temperature
from mnist_jax.train import (
    create_optimizer,
    create_train_state,
    cross_entropy_loss,
    eval_step,
    evaluate,
    scale_images,
    train_step,
)

__version__ = "0.1.0"

__all__ = [
    "AugmentConfig", "CNN", "Config", "DataConfig", "ModelConfig", "TrainConfig", "UserError",
    "create_model", "create_optimizer", "create_train_state", "cross_entropy_loss", "eval_step", "evaluate",
    "fit_temperature", "get_preset", "init_params", "load_grayscale", "load_run", "nll_by_temperature", "predict",
    "predict_probs", "preprocess_file", "scale_images", "to_mnist", "train_step",
]
