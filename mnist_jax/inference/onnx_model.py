"""An ONNX file written by bin/export, predicting on onnxruntime: no JAX, flax, optax or orbax.

The file's contract: one input, uint8 pixels (N, 28, 28, 1) as `inference.inputs` makes them; one
output, probabilities float32 (N, C), the run's temperature applied; and string metadata (ONNX
metadata_props) saying so, with the data set, its C class names and the measured test accuracy. `metadata` writes
those strings and `load_onnx` checks and reads them: the one definition of the format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_jax.data import catalog
from mnist_jax.data.mnist import IMAGE_SHAPE
from mnist_jax.errors import ModelFileError
from mnist_jax.inference.model import BATCH_SIZE, INPUT_CONTRACT, ModelInfo

FORMAT = "mnist_jax-onnx/1"  # metadata "format": the layout of inputs, outputs and metadata below
OUTPUT_CONTRACT = "float32 (N, C): softmax(logits / temperature)"
_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(double)": "float64"}


def metadata(info: ModelInfo, run: Path, test_images: int | None = None,
             run_accuracy: float | None = None) -> dict[str, str]:
    """The file's metadata_props for a model of `info` exported from `run`: `info.test_accuracy` (the
    file's own) and `run_accuracy` (the run's, with JAX) measured on the first `test_images` test images."""
    values = {"format": FORMAT, "data": info.data, "classes": json.dumps(list(info.classes)), "input": info.input,
              "output": OUTPUT_CONTRACT, "temperature": repr(float(info.temperature)), "precision": info.precision,
              "run": str(run), "step": str(info.step)}
    if info.test_accuracy is not None:
        values.update(test_accuracy=repr(float(info.test_accuracy)), test_images=str(test_images),
                      run_test_accuracy=repr(float(run_accuracy)))
    return values


class OnnxModel:
    """A loaded ONNX digit model (see `load_onnx`): `predict` and `info`, as every `inference.model.Model`.

    `metadata`: the file's metadata strings, all of them (the source run, the test images measured, ...).
    """

    def __init__(self, data: bytes, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's choice, one per physical core
        options.log_severity_level = 3  # errors only: its warnings are not the user's
        try:
            self.session = ort.InferenceSession(data, options, providers=ort.get_available_providers())
        except Exception as error:  # noqa: BLE001 - onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rsplit(" : ", 1)[-1][:160]
            raise ModelFileError(f"not an ONNX model, or damaged or truncated (onnxruntime: {reason})", path) from None
        _check_contract(self.session, path)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.info = _info(self.metadata, path)
        if self.session.get_outputs()[0].shape[1] != len(self.info.classes):
            raise ModelFileError(f"gives {self.session.get_outputs()[0].shape[1]} probabilities, but its metadata "
                                 f"names {len(self.info.classes)} classes", path)
        self._input = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Returns probabilities float32 (N, C) for uint8 images (N, 28, 28, 1), `batch_size` at a time."""
        images = np.asarray(images, np.uint8)
        parts = [self.session.run(None, {self._input: images[start : start + batch_size]})[0]
                 for start in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.info.classes)), np.float32)


def load_onnx(path: Path | str, threads: int = 0) -> OnnxModel:
    """Loads an ONNX file written by bin/export onto onnxruntime with `threads` intra-op threads (0: its choice).

    Raises ModelFileError when the file is missing, empty, not ONNX (or truncated), of another input or
    output contract, or without this format's metadata.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError("no such file", path) from None
    except IsADirectoryError:
        raise ModelFileError("is a directory, not an ONNX file", path) from None
    except OSError as error:
        raise ModelFileError(f"cannot be read ({error.strerror})", path) from None
    if not data:
        raise ModelFileError("empty file", path)
    return OnnxModel(data, path, threads)


def _shape(arg) -> str:
    dims = ", ".join(d if isinstance(d, str) else "?" if d is None else str(d) for d in arg.shape)
    return f"{_TYPES.get(arg.type, arg.type)} ({dims})"


def _check_contract(session, path: Path) -> None:
    """Raises ModelFileError unless the model takes uint8 (N, 28, 28, 1) and gives float32 (N, C)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    takes = (len(inputs) == 1 and inputs[0].type == "tensor(uint8)" and len(inputs[0].shape) == 4
             and not isinstance(inputs[0].shape[0], int) and tuple(inputs[0].shape[1:]) == IMAGE_SHAPE)
    gives = (bool(outputs) and outputs[0].type == "tensor(float)" and len(outputs[0].shape) == 2
             and isinstance(outputs[0].shape[1], int))
    if not (takes and gives):
        found = f"takes {', '.join(map(_shape, inputs))} and gives {', '.join(map(_shape, outputs))}"
        raise ModelFileError(f"{found}, not {INPUT_CONTRACT} pixels to {OUTPUT_CONTRACT.split(':')[0]} "
                             "probabilities: another model's contract", path)


def _info(values: dict[str, str], path: Path) -> ModelInfo:
    """The ModelInfo of a file's metadata; raises ModelFileError for another format or damaged values."""
    if "format" not in values:
        raise ModelFileError("holds no mnist_jax metadata: it was not written by bin/export", path)
    if values["format"] != FORMAT:
        raise ModelFileError(f"is of format {values['format']!r}; this version of mnist_jax reads {FORMAT!r}", path)
    try:
        classes = tuple(json.loads(values["classes"]))
        accuracy = values.get("test_accuracy")
        data = values.get("data", catalog.MNIST.name)  # files of format 1 before other data sets: MNIST
        info = ModelInfo(source=path, runtime="onnxruntime", precision=values["precision"], data=data, classes=classes,
                         temperature=float(values["temperature"]), step=int(values["step"]),
                         test_accuracy=float(accuracy) if accuracy is not None else None, input=values["input"])
    except (KeyError, ValueError, TypeError) as error:
        raise ModelFileError(f"its mnist_jax metadata is damaged ({type(error).__name__}: {error})", path) from None
    if data not in catalog.DATASETS:
        raise ModelFileError(f"was trained on data set {data!r}, which this version of mnist_jax does not know", path)
    if len(classes) != catalog.get(data).num_classes or info.temperature <= 0:
        raise ModelFileError(f"its mnist_jax metadata is damaged ({len(classes)} classes for {data}, temperature "
                             f"{info.temperature})", path)
    return info
