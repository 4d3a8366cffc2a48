"""A run's checkpoint -> its ONNX model (float32 or int8) with its metadata, checked on test images; writing it.

The check predicts the test images with the exported model on onnxruntime, and with its reference:
JAX on the same checkpoint for float32, the float32 graph for int8. The model's own test accuracy goes
into its metadata.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np
import onnx
from onnx import helper

from mnist_jax.data.dataset import Split
from mnist_jax.errors import NotWritable
from mnist_jax.export.check import Agreement, agreement
from mnist_jax.export.graph import build_graph
from mnist_jax.export.quantize import quantize_int8
from mnist_jax.inference.model import ModelInfo
from mnist_jax.inference.onnx_model import OnnxModel, metadata
from mnist_jax.inference.predict import RunModel
from mnist_jax.training.step import inference_variables


@dataclasses.dataclass(frozen=True)
class Exported:
    model: onnx.ModelProto  # with its metadata
    info: ModelInfo  # what the metadata says, the test accuracy measured
    check: Agreement  # against the reference: JAX for float32, the float32 graph for int8
    jax_accuracy: float  # JAX's on the same test images


def float32_graph(run: RunModel) -> onnx.ModelProto:
    """The run's inference model as an ONNX graph: `inference_variables` (EMA params where kept, BatchNorm
    statistics) and the checkpoint's temperature, in float32 whatever the run computes in."""
    variables = jax.tree.map(np.asarray, inference_variables(run.run.state))
    return build_graph(run.run.config.model, variables, run.run.temperature, len(run.info.classes))


def _with_metadata(model: onnx.ModelProto, info: ModelInfo, run: Path, *measured) -> onnx.ModelProto:
    helper.set_model_props(model, metadata(info, run, *measured))
    return model


def export(run: RunModel, out: Path, test: Split, calibration: np.ndarray | None = None) -> Exported:
    """Exports `run` (to be written as `out`), int8 when uint8 `calibration` images (N, 28, 28, 1) are given
    (training images), and checks it on the `test` split. Raises ExportError naming a layer it cannot express."""
    info = dataclasses.replace(run.info, source=Path(out), runtime="onnxruntime", test_accuracy=None,
                               precision="float32" if calibration is None else "int8")
    model = _with_metadata(float32_graph(run), dataclasses.replace(info, precision="float32"), run.info.source)
    jax_probabilities = run.predict(test.images)
    reference = jax_probabilities
    if calibration is not None:
        reference = OnnxModel(model.SerializeToString(), Path(out)).predict(test.images)
        model = _with_metadata(quantize_int8(model, calibration), info, run.info.source)
    check = agreement(OnnxModel(model.SerializeToString(), Path(out)).predict(test.images), reference, test.labels)
    info = dataclasses.replace(info, test_accuracy=check.accuracy)
    jax_accuracy = float(np.mean(jax_probabilities.argmax(axis=1) == test.labels))
    return Exported(model=_with_metadata(model, info, run.info.source, len(test.labels), jax_accuracy), info=info,
                    check=check, jax_accuracy=jax_accuracy)


def write(model: onnx.ModelProto, path: Path) -> int:
    """Writes `model` to `path` whole or not at all (a temporary file renamed); returns its size in bytes.
    Raises NotWritable."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = model.SerializeToString()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise NotWritable(f"cannot write {path} ({reason})", path, reason) from None
    return len(data)
