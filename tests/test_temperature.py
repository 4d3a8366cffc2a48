"""Temperature scaling: the fitted T is the exact minimiser of the cross-entropy and recovers a known
miscalibration; a trained run keeps its T in the checkpoint, and bin/predict applies it."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import read_jsonl, run_tool
from PIL import Image
from scipy.optimize import minimize_scalar

from mnist_jax.data import dataset
from mnist_jax.inference.inputs import read_inputs
from mnist_jax.inference.predict import predict, predict_probs
from mnist_jax.model.temperature import TEMPERATURES, fit_temperature, nll_by_temperature
from mnist_jax.training import checkpoint
from mnist_jax.training.step import inference_variables, scale_images


def exact_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the mean cross-entropy of softmax(logits / T), by scipy in float64."""
    logits = np.asarray(logits, np.float64)

    def loss(log_t):
        scaled = logits / np.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(scaled).sum(axis=1)) - scaled[np.arange(len(labels)), labels])

    return float(np.exp(minimize_scalar(loss, bounds=(-4, 4), method="bounded", options={"xatol": 1e-7}).x))


def fitted(logits, labels) -> float:
    return fit_temperature(np.sum(nll_by_temperature(logits, labels), axis=0))


def test_the_candidates_span_sixteenfold_both_ways_and_include_no_scaling():
    assert TEMPERATURES[0] == 1 / 16 and TEMPERATURES[-1] == 16 and 1.0 in TEMPERATURES


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_the_fit_recovers_a_known_miscalibration_and_is_the_exact_minimiser(scale):
    # Labels drawn from softmax(z): logits scale * z are calibrated by T = scale, up to sampling noise.
    key_logits, key_labels = jax.random.split(jax.random.key(0))
    true_logits = 2.0 * jax.random.normal(key_logits, (20000, 10))
    labels = np.asarray(jax.random.categorical(key_labels, true_logits))
    logits = np.asarray(true_logits) * scale
    temperature = fitted(logits, labels)
    assert temperature == pytest.approx(exact_temperature(logits, labels), rel=1e-3)  # not limited to the grid
    assert temperature == pytest.approx(scale, rel=0.05)


@pytest.mark.parametrize("case", ["flat", "not finite"])
def test_sums_that_cannot_choose_leave_the_probabilities_as_they_are(case):
    sums = np.full(len(TEMPERATURES), 2.3) if case == "flat" else np.where(TEMPERATURES < 1, np.nan, 1.0)
    assert fit_temperature(sums) == 1.0


def test_a_minimum_beyond_the_grid_stops_at_its_edge():
    assert fit_temperature(-np.log(TEMPERATURES)) == TEMPERATURES[-1]  # falls all the way to T = 16


def test_a_trained_run_keeps_the_temperature_that_minimises_its_validation_loss(trained_run, mnist):
    restored = checkpoint.restore(trained_run.path)
    record = next(r for r in read_jsonl(trained_run.path / "metrics.jsonl") if r["step"] == restored.step)
    summary = json.loads((trained_run.path / "summary.json").read_text())
    assert restored.temperature == record["val_temperature"] == summary["temperature"]
    validation = dataset.split(mnist, restored.config.data).validation
    logits = restored.state.apply_fn(inference_variables(restored.state), scale_images(validation.images), train=False)
    assert restored.temperature == pytest.approx(exact_temperature(logits, validation.labels), rel=1e-3)
    assert restored.temperature != 1.0


def test_predict_reports_the_calibrated_probability(trained_run, mnist, tmp_path):
    restored = checkpoint.restore(trained_run.path)
    raw = predict(restored.state, mnist.test_images[:500])
    images = mnist.test_images[np.argsort(raw.max(axis=1))[:4]]  # the least sure: far from a saturated 1.0
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"digit-{index}.png")
        Image.fromarray(image[:, :, 0]).save(paths[-1])
    result = run_tool("predict", *map(str, paths), "--run", str(trained_run.path), "--json")
    assert result.returncode == 0, result.stderr
    reported = [json.loads(line)["probability"] for line in result.stdout.splitlines()]
    seen = np.stack([read_inputs(path)[0] for path in paths])  # what the tool feeds the model
    calibrated = predict(restored.state, seen, temperature=restored.temperature).max(axis=1)
    np.testing.assert_allclose(reported, calibrated, atol=2e-6)  # JSON rounds to 6 decimals
    assert not np.allclose(reported, predict(restored.state, seen).max(axis=1), atol=1e-3)


def test_every_temperature_runs_the_same_compiled_prediction(trained_run, mnist):
    state = checkpoint.restore(trained_run.path).state
    images = mnist.test_images[:8]
    predict(state, images)
    compiled = predict_probs._cache_size()
    for temperature in (0.5, np.float32(2.0), np.float64(0.8), 1):
        predict(state, images, temperature=temperature)
    assert predict_probs._cache_size() == compiled
