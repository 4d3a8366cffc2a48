"""mnist_jax: handwritten-digit recognition with JAX, Flax (linen), optax, tfds and Orbax.

The pure building blocks, for research code:

    config = mnist_jax.get_preset("default")
    state = mnist_jax.create_train_state(config, jax.random.key(0))
    state, metrics = mnist_jax.train_step(state, {"image": x_uint8, "label": y}, jax.random.key(1))
    probs = mnist_jax.predict(state, mnist_jax.to_mnist(gray_image)[None])
    probs = mnist_jax.load_onnx("model.onnx").predict(images)  # a bin/export file on onnxruntime: no JAX

Importing the package loads no JAX: each name below is imported from its module on first use
(PEP 562), so the command-line tools answer --help at once.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"  # 0.2: the package laid out by workflow stage (data, model, training, inference, evaluation)

_EXPORTS = {
    "mnist_jax.config": ("AugmentConfig", "Config", "DataConfig", "ModelConfig", "TrainConfig", "get_preset"),
    "mnist_jax.errors": ("MnistJaxError",),
    "mnist_jax.model.networks": ("CNN", "create_model", "init_params"),
    "mnist_jax.model.temperature": ("fit_temperature", "nll_by_temperature"),
    "mnist_jax.training.step": ("create_optimizer", "create_train_state", "cross_entropy_loss", "eval_step",
                                "evaluate", "scale_images", "train_step"),
    "mnist_jax.training.checkpoint": ("restore",),
    "mnist_jax.inference.predict": ("load_run_model", "predict", "predict_probs"),
    "mnist_jax.inference.onnx_model": ("OnnxModel", "load_onnx"),
    "mnist_jax.inference.preprocess": ("load_grayscale", "to_mnist"),
    "mnist_jax.inference.inputs": ("read_inputs",),
}
_ALIASES = {"load_run": "restore"}  # exported name -> the module's own name
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
_MODULE_OF.update({alias: _MODULE_OF.pop(name) for alias, name in _ALIASES.items()})

__all__ = sorted(_MODULE_OF)  # noqa: PLE0605 - a list, built from _EXPORTS


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _ALIASES.get(name, name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
