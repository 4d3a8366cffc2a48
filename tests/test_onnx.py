"""bin/export and the JAX-free predict: real ONNX files, onnxruntime, real test digits, real subprocesses."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
import pytest
from conftest import ROOT, run_tool
from onnx import TensorProto, helper
from PIL import Image

from mnist_jax.config import get_preset
from mnist_jax.data.mnist import CLASSES, IMAGE_SHAPE
from mnist_jax.errors import ExportError, ModelFileError
from mnist_jax.export.exporter import float32_graph, write
from mnist_jax.inference.inputs import read_inputs
from mnist_jax.inference.model import INPUT_CONTRACT, ModelInfo
from mnist_jax.inference.onnx_model import OnnxModel, load_onnx, metadata
from mnist_jax.inference.predict import RunModel, load_run_model
from mnist_jax.model.networks import create_model
from mnist_jax.training.checkpoint import Restored
from mnist_jax.training.step import TrainState

TEST_IMAGES = 500  # the test digits bin/export checks its files on here
SMALL_CNN = {"conv_features": (8, 16), "kernel_sizes": (5, 3), "dense_features": (32,)}


def random_model(overrides: dict, ema: bool = False, temperature: float = 1.0, seed: int = 0) -> RunModel:
    """A model of `overrides` over the default config, as a restored run would give it, with seeded random
    variables of the shapes flax's init gives (without compiling init: seconds per model): kernels scaled by
    1/sqrt(fan-in), BatchNorm statistics and affine parameters away from their initial values (mean 0,
    variance 1, scale 1 or 0, bias 0), and with `ema` an EMA unlike the params: the export must use each."""
    config = get_preset("default").replace(model=overrides)
    network = create_model(config.model)
    shapes = jax.eval_shape(network.init, jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            values = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        elif name in ("var", "scale"):
            values = rng.uniform(0.3, 3.0, leaf.shape)
        else:  # bias, mean
            values = rng.normal(0, 0.3, leaf.shape)
        return values.astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    params = variables["params"]
    averaged = jax.tree.map(lambda p: p + rng.normal(0, 0.1, p.shape).astype(np.float32), params) if ema else {}
    state = TrainState.create(apply_fn=network.apply, params=params, tx=optax.identity(),
                              batch_stats=variables.get("batch_stats", {}), ema_params=averaged)
    run = Restored(state=state, config=config, step=0, directory=Path("random"), temperature=temperature)
    info = ModelInfo(source=Path("random"), runtime="jax", precision=config.model.dtype, data="mnist",
                     classes=CLASSES,
                     temperature=temperature, test_accuracy=None, step=0)
    return RunModel(run, info)


def on_onnxruntime(model: RunModel) -> OnnxModel:
    graph = float32_graph(model)
    helper.set_model_props(graph, metadata(model.info, Path("random")))
    return OnnxModel(graph.SerializeToString(), Path("random.onnx"))


@pytest.fixture(scope="module")
def fresh_file(tmp_path_factory) -> Path:
    """A small CNN of random variables written as bin/export writes it: a real ONNX file without MNIST."""
    model = random_model(SMALL_CNN)
    graph = float32_graph(model)
    helper.set_model_props(graph, metadata(model.info, Path("random")))
    path = tmp_path_factory.mktemp("onnx") / "fresh.onnx"
    write(graph, path)
    return path


# The bad model files: (what to write, the problem bin/predict --model names).
def _other_contract() -> bytes:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model.SerializeToString()


BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": (lambda good: b"", "empty file"),
    "truncated": (lambda good: good[: len(good) // 2], "not an ONNX model, or damaged or truncated"),
    "not-onnx": (lambda good: b"\x89PNG\r\n\x1a\n" + bytes(200), "not an ONNX model, or damaged or truncated"),
    "other-contract": (lambda good: _other_contract(),
                       "takes float32 (1, 3, 32, 32) and gives float32 (1, 3, 32, 32), not uint8 (N, 28, 28, 1) "
                       "pixels to float32 (N, C) probabilities: another model's contract"),
    "no-metadata": (lambda good: _without_metadata(good),
                    "holds no mnist_jax metadata: it was not written by bin/export"),
}


def _without_metadata(good: bytes) -> bytes:
    model = onnx.load_from_string(good)
    del model.metadata_props[:]
    return model.SerializeToString()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, fresh_file) -> dict[str, tuple[Path, str]]:
    directory = tmp_path_factory.mktemp("bad-models")
    good = fresh_file.read_bytes()
    files = {}
    for name, (content, problem) in BAD_FILES.items():
        path = directory / f"{name}.onnx"
        if content is not None:
            path.write_bytes(content(good))
        files[name] = (path, problem)
    return files


def test_every_bad_model_file_is_a_model_file_error_naming_its_problem(bad_files, fresh_file):
    for name, (path, problem) in bad_files.items():
        with pytest.raises(ModelFileError) as caught:
            load_onnx(path)
        assert str(caught.value).startswith(f"{path}: {problem}"), name
    with pytest.raises(ModelFileError, match="is a directory, not an ONNX file"):
        load_onnx(fresh_file.parent)
    info = load_onnx(fresh_file).info
    assert (info.classes, info.input, info.precision, info.runtime) == (CLASSES, INPUT_CONTRACT, "float32",
                                                                          "onnxruntime")


@pytest.mark.parametrize("name", ["missing", "truncated", "other-contract"])
def test_predict_with_a_bad_model_file_is_one_line_and_exit_2(bad_files, fresh_file, tmp_path, name):
    path, problem = bad_files[name]
    image = tmp_path / "seven.png"
    Image.new("L", (28, 28)).save(image)
    result = run_tool("predict", "--model", str(path), str(image))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"error: {path}: {problem}")
    assert line.endswith(f"; write one with: bin/export --run RUN --out {path}")


def test_export_refuses_variables_it_cannot_express_naming_the_layer():
    model = random_model(SMALL_CNN)
    variables = {"params": {**model.run.state.params, "LayerNorm_0": {"scale": np.ones(16), "bias": np.zeros(16)}}}
    run = dataclasses.replace(model.run, state=model.run.state.replace(params=variables["params"]))
    with pytest.raises(ExportError) as caught:
        float32_graph(dataclasses.replace(model, run=run))
    assert caught.value.layer == "params/LayerNorm_0"
    assert str(caught.value) == ("layer params/LayerNorm_0: not a layer of the cnn this config builds: "
                                 "it has no ONNX form here")
    params = {name: value for name, value in model.run.state.params.items() if name != "Dense_1"}
    run = dataclasses.replace(model.run, state=model.run.state.replace(params=params))
    with pytest.raises(ExportError, match="^layer params/Dense_1/kernel: the run's variables lack it"):
        float32_graph(dataclasses.replace(model, run=run))


def test_bench_onnx_measures_every_figure(fresh_file, tmp_path):
    result = run_tool("bench_onnx", str(fresh_file), "--threads", "1,2", "--runs", "3", "--batch-size", "16",
                      "--repeats", "1", "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "bench.json").read_text())
    (entry,) = results["models"]
    assert entry["size_bytes"] == fresh_file.stat().st_size and entry["precision"] == "float32"
    for threads in ("1", "2"):
        assert entry["threads"][threads]["latency_ms"]["median"] > 0
        assert entry["threads"][threads]["images_per_second"]["median"] > 0
    assert entry["predict_process"]["peak_rss_mib"]["median"] > 10
    assert results["machine"]["cores"] >= 1 and "onnxruntime" in results["machine"]
    assert f"bin/predict --model {fresh_file} on one PNG" in result.stdout


# The full tier: every architecture on real test digits, then the short trained run exported for real.


@pytest.mark.parametrize("overrides, ema", [
    ({**SMALL_CNN, "pool": "avg"}, True),
    ({**SMALL_CNN, "pool": "max", "norm": "batch"}, False),
    ({**SMALL_CNN, "pool": "none", "strides": (2, 2), "kernel_sizes": (4, 3), "dense_features": ()}, False),
    ({"name": "resnet", "stage_features": (8, 16), "blocks_per_stage": 2}, False),
], ids=["cnn-avg-ema", "cnn-max-batchnorm", "cnn-strided-even-kernel", "resnet"])
def test_every_architecture_exports_and_predicts_as_jax_does(mnist, overrides, ema):
    model = random_model(overrides, ema=ema, temperature=0.7)
    digits = mnist.test_images[:200]
    expected, found = model.predict(digits), on_onnxruntime(model).predict(digits)
    assert np.array_equal(found.argmax(axis=1), expected.argmax(axis=1))
    assert np.abs(np.log(found) - np.log(expected)).max() < 1e-4


def test_a_bfloat16_run_exports_in_float32(mnist):
    model = random_model({**SMALL_CNN, "norm": "batch", "dtype": "bfloat16"})
    float32 = get_preset("default").replace(model={**SMALL_CNN, "norm": "batch"})
    twin = dataclasses.replace(model, run=dataclasses.replace(
        model.run, config=float32, state=model.run.state.replace(apply_fn=create_model(float32.model).apply)))
    digits = mnist.test_images[:200]
    found = on_onnxruntime(model).predict(digits)
    assert np.abs(np.log(found) - np.log(twin.predict(digits))).max() < 1e-4  # the float32 twin's computation
    assert np.abs(found - model.predict(digits)).max() < 0.02  # bfloat16's rounding, no more


@pytest.fixture(scope="module")
def exported(trained_run, data_dir, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """The short run exported by the real bin/export in both precisions: {precision: (file, stdout)}."""
    directory = tmp_path_factory.mktemp("exported")
    files = {}
    for precision, flags in (("float32", []), ("int8", ["--int8", "--calibration-images", "500"])):
        path = directory / f"short-{precision}.onnx"
        result = run_tool("export", "--run", str(trained_run.path), "--out", str(path), "--data-dir", str(data_dir),
                          "--data-source", "prepared", "--test-images", str(TEST_IMAGES), *flags)
        assert result.returncode == 0, result.stderr
        files[precision] = (path, result.stdout)
    return files


@pytest.fixture(scope="module")
def jax_model(trained_run) -> RunModel:
    return load_run_model(trained_run.path)


def test_export_writes_the_runs_model_and_says_how_it_agrees(exported, jax_model, trained_run):
    summary = json.loads((trained_run.path / "summary.json").read_text())
    accuracies = {}
    for precision, (path, stdout) in exported.items():
        model = load_onnx(path)
        info = model.info
        assert (info.precision, info.classes, info.input, info.step) == (precision, CLASSES, INPUT_CONTRACT,
                                                                         summary["best_step"])
        assert info.temperature == pytest.approx(summary["temperature"]) == jax_model.info.temperature
        assert model.metadata["run"] == str(trained_run.path) and model.metadata["test_images"] == str(TEST_IMAGES)
        jax_accuracy = re.search(r"JAX ([\d.]+)%", stdout)
        assert float(model.metadata["run_test_accuracy"]) == pytest.approx(float(jax_accuracy[1]) / 100, abs=5e-5)
        accuracy = re.search(r"^test accuracy ([\d.]+)% on 500 test images", stdout, re.M)
        assert accuracy and float(accuracy[1]) == pytest.approx(100 * info.test_accuracy, abs=0.005)
        accuracies[precision] = info.test_accuracy
    float32_out, int8_out = exported["float32"][1], exported["int8"][1]
    assert "top-1 as JAX's on 500 of 500 (0 differ)" in float32_out
    assert re.search(r"\(JAX [\d.]+%; \+0\.00 points\)", float32_out)
    assert "int8, " in int8_out and "calibrated on 500 training images" in int8_out
    assert abs(accuracies["int8"] - accuracies["float32"]) <= 0.01
    assert exported["int8"][0].stat().st_size < 0.4 * exported["float32"][0].stat().st_size


def test_exported_models_predict_real_test_digits_as_the_run_does(exported, jax_model, mnist):
    unseen = slice(TEST_IMAGES, TEST_IMAGES + 300)  # not among those bin/export checked
    digits, labels = mnist.test_images[unseen], mnist.test_labels[unseen]
    expected = jax_model.predict(digits)
    float32 = load_onnx(exported["float32"][0]).predict(digits, batch_size=64)
    assert np.array_equal(float32.argmax(axis=1), expected.argmax(axis=1))
    assert np.abs(float32 - expected).max() < 1e-5
    int8 = load_onnx(exported["int8"][0]).predict(digits)
    assert np.mean(int8.argmax(axis=1) == float32.argmax(axis=1)) >= 0.98
    assert np.mean(int8.argmax(axis=1) == labels) >= np.mean(float32.argmax(axis=1) == labels) - 0.01


# Runs bin/predict ARGS where only the light install's distributions (mnist-jax's own requirements, no extra)
# can be imported; prints {"exit", "attempted": blocked imports tried, "training_stack": those in sys.modules}.
LIGHT_PREDICT = r"""
import importlib.abc, importlib.metadata, json, re, runpy, sys
from packaging.requirements import Requirement

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

def requirements(name, found):
    if key(name) not in found:
        found.add(key(name))
        for text in importlib.metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                requirements(requirement.name, found)
    return found

light = requirements("mnist-jax", set())
blocked = {module for module, owners in importlib.metadata.packages_distributions().items()
           if not any(key(owner) in light for owner in owners)}
attempted = []

class LightInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            attempted.append(name.partition(".")[0])
            raise ModuleNotFoundError(f"No module named {name!r} in the light install", name=name)

sys.meta_path.insert(0, LightInstall())
sys.argv = ["predict", *ARGS]
try:
    runpy.run_module("mnist_jax.cli.predict", run_name="__main__")
except SystemExit as exit:
    code = exit.code
stack = {"jax", "jaxlib", "flax", "optax", "orbax", "tensorflow_datasets", "onnx"}
print(json.dumps({"exit": code, "attempted": sorted(set(attempted) & stack),
                  "training_stack": sorted({name.split(".")[0] for name in sys.modules} & stack)}), file=sys.stderr)
"""


def light_predict(*arguments: str) -> subprocess.CompletedProcess:
    probe = LIGHT_PREDICT.replace("ARGS", repr(list(arguments)))
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_predict_with_a_model_file_needs_only_the_light_install(exported, jax_model, mnist, trained_run,
                                                                 tmp_path):
    files = []
    for index in range(TEST_IMAGES, TEST_IMAGES + 12):  # real test digits as users' files: dark ink on paper, 4x
        paper = 235 - np.kron(mnist.test_images[index, :, :, 0], np.ones((4, 4), np.uint8)) * 0.9
        files.append(tmp_path / f"digit-{index}.png")
        Image.fromarray(np.pad(paper, 20, constant_values=235).astype(np.uint8)).save(files[-1])
    result = light_predict("--model", str(exported["float32"][0]), "--json", "--top-k", "3", *map(str, files))
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"exit": 0, "attempted": [], "training_stack": []}
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = jax_model.predict(np.stack([read_inputs(path)[0] for path in files]))
    assert [row["file"] for row in rows] == list(map(str, files))
    assert [row["label"] for row in rows] == list(expected.argmax(axis=1))
    assert np.allclose([row["probability"] for row in rows], expected.max(axis=1), atol=2e-6)
    assert np.mean([row["label"] for row in rows] == mnist.test_labels[TEST_IMAGES : TEST_IMAGES + 12]) >= 0.9
    result = light_predict("--run", str(trained_run.path), str(files[0]))  # a checkpoint needs the training stack
    error, report = result.stderr.strip().splitlines()
    assert error.startswith("error: this needs the training stack, which this environment lacks (no module named ")
    assert error.endswith("or predict with an exported model: --model FILE.onnx")
    assert json.loads(report)["exit"] == 2 and result.stdout == ""


def test_eval_inputs_runs_an_int8_model(exported, data_dir):
    path = exported["int8"][0]
    result = run_tool("eval_inputs", "--model", str(path), "--data-dir", str(data_dir), "--data-source", "prepared",
                      "--conditions", "paper,noise", "--per-condition", "30", "--fonts-per-digit", "0", "--scans", "0")
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"condition", "paper", "noise", "**all MNIST renders**"}
    ours = float(rows["**all MNIST renders**"].split("|")[5].strip(" %"))
    assert ours >= 85  # the short run's model, in int8
    assert f"(model: {path}, checkpoint step " in result.stderr and "(onnxruntime, int8)" in result.stderr
