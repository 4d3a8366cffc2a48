"""An exported float32 graph quantized to int8 by onnxruntime's static quantization, calibrated on images.

Static: the activations' ranges are fixed once, from the ranges the float32 graph's values take on
the calibration images (min-max), so the int8 graph needs no float pass at run time. Weights are
quantized per output channel (int8), activations per tensor (uint8, onnxruntime's faster form on
x86-64), in the QDQ format: QuantizeLinear/DequantizeLinear pairs around each quantized operator,
which onnxruntime fuses into integer kernels and any ONNX runtime can read as plain operators.

Some operators stay float32. The logits layer, the temperature and the softmax: an 8-bit logit
would move the calibrated probabilities by several points. The first conv: its one input channel
leaves int8 nothing to gain, and quantizing its input costs a pass over the pixels (on the default
CNN its int8 kernel took longer than the float one). Pooling: onnxruntime's QLinearAveragePool
took half the default CNN's int8 time, more than the float pools it replaced (docs/onnx.md).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from mnist_jax.export.graph import CALIBRATE, INPUT, OUTPUT

CALIBRATION_BATCH = 100  # images per calibration run of the float32 graph
FLOAT_OPS = ("AveragePool", "MaxPool", "GlobalAveragePool")  # kept float32 wherever they are (see above)


class _Images:
    """onnxruntime's CalibrationDataReader protocol over uint8 images (N, 28, 28, 1), in batches."""

    def __init__(self, images: np.ndarray):
        self.batches = iter(np.array_split(images, max(1, len(images) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_int8(model: onnx.ModelProto, calibration_images: np.ndarray) -> onnx.ModelProto:
    """Returns `model` (a `graph.build_graph` model) with int8 convs and dense layers, calibrated on uint8
    `calibration_images` (N, 28, 28, 1): training images, never test ones."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    nodes = model.graph.node
    calibrate = next(node for node in nodes if node.name == CALIBRATE)
    logits = next(node.name for node in nodes if calibrate.input[0] in node.output)
    first_conv = next(node.name for node in nodes if node.op_type == "Conv")
    pools = [node.name for node in nodes if node.op_type in FLOAT_OPS]
    root = logging.getLogger()  # where the quantizer advises pre-processing, which these graphs need not
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-int8-") as scratch:
            source, target = Path(scratch) / "float32.onnx", Path(scratch) / "int8.onnx"
            onnx.save(model, source)
            quantize_static(source, target, _Images(calibration_images), quant_format=QuantFormat.QDQ,
                            nodes_to_exclude=[first_conv, *pools, logits, CALIBRATE, OUTPUT], per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            return onnx.load(target)
    finally:
        root.setLevel(level)
