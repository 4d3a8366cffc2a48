"""A model's inference as an ONNX graph, built with the onnx package's own helpers: pure, no I/O.

The graph computes what `inference.predict` does, in float32 whatever dtype the run computed in:
uint8 pixels (N, 28, 28, 1) -> / 255 -> the CNN or ResNet of the config (`model.networks`) ->
softmax(logits / temperature) float32 (N, 10). Convolutions run in ONNX's NCHW layout (the input
has one channel, so a reshape gets there); each BatchNorm's running statistics are folded into the
conv before it; the rows of the first dense kernel are reordered from NHWC to NCHW flattening.
Every array of the variables must go into the graph: one that does not names a layer this exporter
cannot express, and the export fails with `ExportError` naming it.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mnist_jax.config import ModelConfig
from mnist_jax.data.mnist import IMAGE_SHAPE
from mnist_jax.errors import ExportError
from mnist_jax.model.networks import BATCH_NORM_EPSILON

OPSET = 13  # Softmax over one axis and per-channel QuantizeLinear; onnxruntime 1.8 (2021) and later run it
IR_VERSION = 7  # the IR of opset 13, so that older runtimes (on small boards) read the file
INPUT, OUTPUT = "pixels", "probabilities"  # the graph's input and output, also the names of their nodes
CALIBRATE = "calibrate"  # the node dividing the logits by the temperature


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A value of the graph being built: its name and its NCHW shape without the batch (C, H, W) or (F,)."""

    name: str
    shape: tuple[int, ...]


class _Builder:
    """The nodes and initializers of a graph being built, and the model's arrays not yet used."""

    def __init__(self, variables: dict):
        self.variables = variables
        self.unused = {"/".join(path) for path in _leaf_paths(variables)}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def take(self, *path: str) -> np.ndarray:
        """Returns the model's array at `path` ("params", layer..., name) as float32, marking it used."""
        node = self.variables
        try:
            for key in path:
                node = node[key]
        except (KeyError, TypeError):
            raise ExportError("the run's variables lack it, while its config builds it", "/".join(path)) from None
        self.unused.discard("/".join(path))
        return np.asarray(node, np.float32)

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name


def _leaf_paths(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """flax's "SAME" padding of one spatial axis: (before, after)."""
    return jax.lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")[0]


def conv(b: _Builder, x: Tensor, layer: str, stride: int = 1, bias: bool = True, norm: str | None = None) -> Tensor:
    """`layer` (an nn.Conv, "SAME" padding), then the BatchNorm `norm` folded into it when given."""
    kernel = b.take("params", *layer.split("/"), "kernel")  # (kh, kw, in, out)
    kh, kw, _, features = kernel.shape
    shift = b.take("params", *layer.split("/"), "bias") if bias else np.zeros(features, np.float32)
    if norm is not None:
        path = norm.split("/")
        scale = b.take("params", *path, "scale") / np.sqrt(b.take("batch_stats", *path, "var") + BATCH_NORM_EPSILON)
        kernel = kernel * scale
        shift = (shift - b.take("batch_stats", *path, "mean")) * scale + b.take("params", *path, "bias")
    (top, bottom), (left, right) = _same_pads(x.shape[1], kh, stride), _same_pads(x.shape[2], kw, stride)
    weight = b.constant(f"{layer}/weight", kernel.transpose(3, 2, 0, 1))  # (out, in, kh, kw)
    out = b.node("Conv", [x.name, weight, b.constant(f"{layer}/shift", shift)], layer, kernel_shape=[kh, kw],
                 strides=[stride, stride], pads=[top, left, bottom, right])
    height, width = ((size + before + after - k) // stride + 1
                     for size, before, after, k in ((x.shape[1], top, bottom, kh), (x.shape[2], left, right, kw)))
    return Tensor(out, (features, height, width))


def relu(b: _Builder, x: Tensor, name: str) -> Tensor:
    return Tensor(b.node("Relu", [x.name], name), x.shape)


def pool(b: _Builder, x: Tensor, kind: str, name: str) -> Tensor:
    """2x2 pooling with stride 2 and no padding (flax's avg_pool / max_pool as the CNN calls them)."""
    if kind == "none":
        return x
    if kind not in ("avg", "max"):
        raise ExportError(f"pooling {kind!r} has no ONNX form here", name)
    out = b.node({"avg": "AveragePool", "max": "MaxPool"}[kind], [x.name], name, kernel_shape=[2, 2], strides=[2, 2])
    channels, height, width = x.shape
    return Tensor(out, (channels, height // 2, width // 2))


def dense(b: _Builder, x: Tensor, layer: str, nhwc: tuple[int, int, int] | None = None) -> Tensor:
    """`layer` (an nn.Dense) on flat features; `nhwc`: the (H, W, C) the flax model flattened, whose
    kernel rows are reordered to the NCHW order of this graph's Flatten."""
    kernel = b.take("params", *layer.split("/"), "kernel")  # (in, out)
    if nhwc is not None:
        kernel = kernel.reshape(*nhwc, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
    out = b.node("Gemm", [x.name, b.constant(f"{layer}/kernel", kernel),
                          b.constant(f"{layer}/bias", b.take("params", *layer.split("/"), "bias"))], layer)
    return Tensor(out, (kernel.shape[1],))


def flatten(b: _Builder, x: Tensor) -> Tensor:
    return Tensor(b.node("Flatten", [x.name], "flatten", axis=1), (int(np.prod(x.shape)),))


def cnn(b: _Builder, x: Tensor, config: ModelConfig) -> Tensor:
    """`networks.CNN`: conv -> [BatchNorm ->] ReLU -> pool blocks, dense -> ReLU layers (dropout is off), logits."""
    if config.norm not in ("none", "batch"):
        raise ExportError(f"norm {config.norm!r} has no ONNX form here", "params/Conv_0")
    batch_norm = config.norm == "batch"
    strides = config.strides or (1,) * len(config.conv_features)
    for i, stride in enumerate(strides):
        x = conv(b, x, f"Conv_{i}", stride, bias=not batch_norm, norm=f"BatchNorm_{i}" if batch_norm else None)
        x = pool(b, relu(b, x, f"Conv_{i}/relu"), config.pool, f"Conv_{i}/pool")
    channels, height, width = x.shape
    x = flatten(b, x)
    for j in range(len(config.dense_features) + 1):
        x = dense(b, x, f"Dense_{j}", nhwc=(height, width, channels) if j == 0 else None)
        if j < len(config.dense_features):
            x = relu(b, x, f"Dense_{j}/relu")
    return x


def resnet(b: _Builder, x: Tensor, config: ModelConfig) -> Tensor:
    """`networks.ResNet`: a conv stem, residual blocks (each stage's first of stride 2), global mean, logits."""
    x = relu(b, conv(b, x, "Conv_0", bias=False, norm="BatchNorm_0"), "Conv_0/relu")
    block = 0
    for features in config.stage_features:
        for index in range(config.blocks_per_stage):
            name, stride = f"ResidualBlock_{block}", 2 if index == 0 else 1
            y = relu(b, conv(b, x, f"{name}/Conv_0", stride, bias=False, norm=f"{name}/BatchNorm_0"), f"{name}/relu_0")
            y = conv(b, y, f"{name}/Conv_1", bias=False, norm=f"{name}/BatchNorm_1")
            if x.shape != y.shape:
                x = conv(b, x, f"{name}/Conv_2", stride, bias=False, norm=f"{name}/BatchNorm_2")
            x = relu(b, Tensor(b.node("Add", [x.name, y.name], f"{name}/add"), y.shape), f"{name}/relu")
            block += 1
    x = Tensor(b.node("GlobalAveragePool", [x.name], "mean"), (x.shape[0], 1, 1))
    return dense(b, flatten(b, x), "Dense_0")


def build_graph(config: ModelConfig, variables: dict, temperature: float = 1.0,
                num_classes: int = 10) -> onnx.ModelProto:
    """Returns the ONNX model (opset 13) of the network `config` builds with `variables` ({"params"} and,
    with BatchNorm, {"batch_stats"}: nested dicts of arrays, as `training.step.inference_variables` gives).

    Raises ExportError naming the layer when the variables hold one that the config's network lacks, or
    lack one it has.
    """
    if config.name not in ("cnn", "resnet"):
        raise ExportError(f"model {config.name!r} has no ONNX form here", "model")
    b = _Builder(variables)
    pixels = b.node("Cast", [INPUT], "cast", to=TensorProto.FLOAT)
    scaled = b.node("Div", [pixels, b.constant("255", np.float32(255.0))], "scale")
    height, width, channels = IMAGE_SHAPE
    shape = b.constant("nchw_shape", np.array([-1, channels, height, width], np.int64))
    nchw = b.node("Reshape", [scaled, shape], "nchw")
    logits = (resnet if config.name == "resnet" else cnn)(b, Tensor(nchw, (channels, height, width)), config)
    calibrated = b.node("Div", [logits.name, b.constant("temperature", np.float32(temperature))], CALIBRATE)
    b.node("Softmax", [calibrated], OUTPUT, axis=1)
    if b.unused:
        raise ExportError(f"not a layer of the {config.name} this config builds: it has no ONNX form here",
                          sorted(b.unused)[0].rpartition("/")[0])
    graph = helper.make_graph(
        b.nodes, config.name, [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", num_classes])], b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mnist_jax")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
