"""The tools start at once: --help, argparse errors and config errors load no JAX; `import mnist_jax` neither."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

TOOLS = ("train", "predict", "serve", "evaluate", "eval_inputs", "bench", "bench_serve", "prepare_data",
         "augment_figure", "serve_screenshot", "export", "bench_onnx")
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow_datasets")


def heavy_modules_after(code: str) -> tuple[list[str], str]:
    """Runs `code` in a fresh interpreter; returns the heavy packages it imported and what it printed to stderr."""
    probe = (f"import sys\n{code}\n"
             f"print(__import__('json').dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def run_tool_code(tool: str, *args: str) -> str:
    """Code that runs `bin/<tool> ARGS` in this interpreter and goes on after it exits."""
    return (f"import runpy\nsys.argv = [{tool!r}, *{list(args)!r}]\n"
            f"try:\n    runpy.run_module('mnist_jax.cli.{tool}', run_name='__main__')\n"
            "except SystemExit as exit:\n    print('exit', exit.code, file=sys.stderr)")


@pytest.mark.parametrize("tool", TOOLS)
def test_help_loads_no_jax(tool):
    heavy, stderr = heavy_modules_after(run_tool_code(tool, "--help"))
    assert heavy == [] and "exit 0" in stderr


@pytest.mark.parametrize("tool, args, message", [
    ("train", ["--train.epochz", "1"], "unrecognized arguments: --train.epochz 1"),
    ("train", ["--preset", "huge"], "error: unknown preset 'huge'"),
    ("train", ["--train.epochs", "zero"], "error: invalid train.epochs=zero"),
    ("bench", ["--model.pool", "mean"], "error: invalid model.pool=mean: must be one of avg, max, none"),
    ("predict", ["--top-k", "11", "x.png"], "argument --top-k: invalid choice"),
    ("serve", ["--port", "70000"], "argument --port: 70000 is not a port (0-65535)"),
])
def test_argparse_and_config_errors_load_no_jax(tool, args, message):
    heavy, stderr = heavy_modules_after(run_tool_code(tool, *args))
    assert heavy == [] and message in stderr and "exit 2" in stderr


def test_import_mnist_jax_loads_no_jax_until_a_jax_function_is_used():
    heavy, _ = heavy_modules_after("import mnist_jax; mnist_jax.get_preset('fast'); mnist_jax.MnistJaxError; "
                                   "mnist_jax.load_onnx")
    assert heavy == []
    heavy, _ = heavy_modules_after("import mnist_jax; mnist_jax.train_step")
    assert {"jax", "flax", "optax"} <= set(heavy)


def test_every_exported_name_resolves_and_an_unknown_one_is_an_attribute_error():
    import mnist_jax

    for name in mnist_jax.__all__:
        assert getattr(mnist_jax, name) is not None
    assert set(mnist_jax.__all__) <= set(dir(mnist_jax))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        mnist_jax.no_such_thing  # noqa: B018
