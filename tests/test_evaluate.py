"""bin/evaluate on the session's trained run and the real test split; calibration and TTA arithmetic."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import read_jsonl, run_tool
from PIL import Image

from mnist_jax.evaluation import metrics
from mnist_jax.inference.predict import predict
from mnist_jax.training import checkpoint

FIGURES = ("confusion.png", "misclassified.png", "calibration.png")


def evaluate_json(*args: str) -> dict:
    result = run_tool("evaluate", *args, "--json")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()  # stdout holds the JSON object and nothing else
    return json.loads(line)


@pytest.fixture(scope="module")
def restored(trained_run):
    return checkpoint.restore(trained_run.path)


@pytest.fixture(scope="module")
def data_args(data_dir):
    return ("--data-dir", str(data_dir), "--data-source", "prepared")


@pytest.fixture(scope="module")
def single(trained_run, data_args):
    """bin/evaluate --json of the trained run on the test split, written to its default place."""
    return evaluate_json("--run", str(trained_run.path), *data_args)


def test_reported_accuracy_matches_an_independent_computation_and_figures_are_written(
        trained_run, restored, mnist, single):
    summary = single
    logits = np.concatenate([
        np.asarray(restored.state.apply_fn({"params": restored.state.params}, chunk.astype(np.float32) / 255,
                                           train=False))
        for chunk in np.split(mnist.test_images, 10)
    ])
    predicted, labels = logits.argmax(axis=1), mnist.test_labels
    assert summary["images"] == 10000 and summary["split"] == "test"
    assert summary["accuracy"] == np.mean(predicted == labels)
    assert summary["errors"] == np.sum(predicted != labels)
    assert summary["per_class_accuracy"] == [np.mean(predicted[labels == d] == d) for d in range(10)]
    confusion = np.array(summary["confusion_matrix"])
    assert confusion.sum() == 10000 and confusion[3, 5] == np.sum((labels == 3) & (predicted == 5))
    trained = json.loads((trained_run.path / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-6)
    # The probabilities are calibrated by the temperature stored with the checkpoint.
    log_probs = np.asarray(jax.nn.log_softmax(logits / restored.temperature))
    assert summary["loss"] == pytest.approx(-np.mean(log_probs[np.arange(10000), labels]), rel=1e-4)
    assert summary["runs"] == [{"run": str(trained_run.path), "step": trained["best_step"],
                                "temperature": restored.temperature}]
    assert 0 < summary["expected_calibration_error"] < 0.1

    out = trained_run.path / "evaluation" / "test"
    assert summary["out"] == str(out)
    assert json.loads((out / "summary.json").read_text()) == summary
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 400
            image.verify()


def test_an_ensemble_of_one_run_twice_equals_the_run(trained_run, data_args, single):
    twice = evaluate_json("--run", str(trained_run.path), "--run", str(trained_run.path / "checkpoints"), *data_args)
    assert twice["out"] == str(trained_run.path / "evaluation" / "test-ensemble2")
    assert len(twice["runs"]) == 2
    for key in ("accuracy", "errors", "per_class_accuracy", "confusion_matrix"):
        assert twice[key] == single[key], key
    assert twice["loss"] == pytest.approx(single["loss"], rel=1e-6)


def test_uncalibrated_gives_the_raw_softmax_that_training_tested(trained_run, data_args, single):
    raw = evaluate_json("--run", str(trained_run.path), "--uncalibrated", *data_args)
    trained = json.loads((trained_run.path / "summary.json").read_text())
    assert raw["out"] == str(trained_run.path / "evaluation" / "test-uncalibrated")
    assert raw["runs"][0]["temperature"] == 1.0
    assert raw["loss"] == pytest.approx(trained["test_loss"], rel=1e-4)
    for key in ("accuracy", "errors", "confusion_matrix"):
        assert raw[key] == single[key], key


def test_validation_split_matches_the_validation_accuracy_training_selected_by(trained_run, data_args, tmp_path):
    summary = evaluate_json("--run", str(trained_run.path), "--split", "validation", "--out", str(tmp_path / "v"),
                            *data_args)
    trained = json.loads((trained_run.path / "summary.json").read_text())
    assert summary["images"] == 5000 and summary["split"] == "validation"
    assert summary["accuracy"] == pytest.approx(trained["best_val_accuracy"], abs=1e-6)
    best = next(r for r in read_jsonl(trained_run.path / "metrics.jsonl") if r["step"] == trained["best_step"])
    # The temperature was fitted to lower exactly this loss (computed from float32 probabilities here).
    assert summary["loss"] <= best["val_loss"] + 1e-6
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == sorted([*FIGURES, "summary.json"])


def test_expected_calibration_error_of_a_worked_example():
    # Two predictions at confidence 0.95, one right and one wrong: bin (0.9, 1.0] has accuracy 0.5.
    # Two at 0.55, both right: bin (0.5, 0.6] has accuracy 1.0. ECE = 2/4 * 0.45 + 2/4 * 0.45 = 0.45.
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    bins = metrics.calibration(probabilities, labels, bins=10)
    assert bins["ece"] == pytest.approx(0.45)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert bins["accuracy"][[5, 9]].tolist() == [1.0, 0.5]
    assert bins["confidence"][[5, 9]] == pytest.approx([0.55, 0.95])
    confident = np.eye(2)[labels]  # certain and right: perfectly calibrated
    assert metrics.calibration(confident, labels)["ece"] == 0


def test_test_time_augmentation_is_deterministic_and_starts_from_the_plain_images(restored, mnist):
    images, labels = mnist.test_images[:500], mnist.test_labels[:500]
    views = metrics.tta_views(images, 3)
    assert views[0] is images and not np.allclose(views[1], images) and not np.allclose(views[1], views[2])
    plain = metrics.ensemble_probabilities([restored.state], images, views=1)
    np.testing.assert_array_equal(plain, predict(restored.state, images))
    averaged = metrics.ensemble_probabilities([restored.state], images, views=3)
    np.testing.assert_array_equal(averaged, metrics.ensemble_probabilities([restored.state], images, views=3))
    by_hand = np.mean([predict(restored.state, view) for view in views], axis=0)
    np.testing.assert_allclose(averaged, by_hand, rtol=1e-6)
    assert np.mean(averaged.argmax(1) == labels) >= np.mean(plain.argmax(1) == labels) - 0.02
    assert jax.numpy.allclose(averaged.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("case", ["missing", "no checkpoints", "bad tta"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    args, message = {
        "missing": (["--run", str(tmp_path / "nothing")],
                    f"error: run directory {tmp_path / 'nothing'} does not exist; train one with bin/train or "
                    "pass --run DIR"),
        "no checkpoints": (["--run", str(empty)],
                           f"error: {empty} holds no checkpoints; pass a run directory written by bin/train"),
        "bad tta": (["--tta", "0"], "evaluate: error: argument --tta: must be at least 1, got 0"),
    }[case]
    result = run_tool("evaluate", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_an_unusable_output_directory_is_one_line(trained_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_tool("evaluate", "--run", str(trained_run.path), "--out", str(blocker / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot write output directory {blocker / 'out'} (Not a directory); " \
                                    "pass another --out"
