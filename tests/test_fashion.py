"""Fashion-MNIST end to end (--data.name fashion_mnist): the fast preset trained on Debian's copy evaluates,
predicts photos of clothing-like shapes rendered from its test set, and exports, in its own class names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_tool

from mnist_jax.data import catalog, dataset
from mnist_jax.evaluation.renders import render_catalogue_photo
from mnist_jax.training import checkpoint

PHOTOS = 24


@pytest.fixture(scope="module")
def photos(fashion_data_dir, tmp_path_factory):
    """PHOTOS catalogue photos (JPEG, 4-12x, uneven light) of the first test items: {path: label}."""
    items = dataset.load(fashion_data_dir, spec=catalog.FASHION_MNIST)
    directory = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    files = {}
    for index in range(PHOTOS):
        path = directory / f"photo-{index:02d}.jpg"
        path.write_bytes(render_catalogue_photo(items.test_images[index, :, :, 0], rng))
        files[path] = int(items.test_labels[index])
    return files


def data_flags(fashion_data_dir) -> list[str]:
    return ["--data-dir", str(fashion_data_dir), "--data-source", "prepared"]


def test_a_fashion_run_records_its_data_set_and_has_ten_outputs(fashion_run):
    assert json.loads((fashion_run.path / "config.json").read_text())["data"]["name"] == "fashion_mnist"
    assert "Fashion-MNIST" in fashion_run.stdout
    restored = checkpoint.restore(fashion_run.path)
    assert restored.config.data.name == "fashion_mnist"
    assert restored.state.params["Dense_1"]["kernel"].shape == (128, 10)
    # One epoch of the fast preset; small CNNs reach 91-93% in longer training (docs/data.md).
    assert json.loads((fashion_run.path / "summary.json").read_text())["test_accuracy"] >= 0.85


def test_evaluate_reports_the_fashion_classes_on_its_test_split(fashion_run, fashion_data_dir, tmp_path):
    result = run_tool("evaluate", "--run", str(fashion_run.path), "--out", str(tmp_path), *data_flags(fashion_data_dir))
    assert result.returncode == 0, result.stderr
    assert "Ankle boot" in result.stdout and "T-shirt/top" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data"] == "fashion_mnist" and summary["classes"] == list(catalog.FASHION_CLASSES)
    confusion = np.array(summary["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000 and confusion.sum(axis=1).tolist() == [1000] * 10
    trained = json.loads((fashion_run.path / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-6)  # the same best checkpoint
    assert all((tmp_path / name).stat().st_size > 0 for name in ("confusion.png", "misclassified.png"))


def test_photos_of_test_items_are_read_in_class_names_and_the_onnx_file_agrees(fashion_run, fashion_data_dir,
                                                                               photos, tmp_path):
    directory = str(next(iter(photos)).parent)
    result = run_tool("predict", directory, "--run", str(fashion_run.path), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(row["class"] == catalog.FASHION_CLASSES[row["label"]] for row in rows)
    assert np.mean([row["label"] == photos[next(p for p in photos if str(p) == row["file"])] for row in rows]) >= 0.75

    model = tmp_path / "fashion.onnx"
    exported = run_tool("export", "--run", str(fashion_run.path), "--out", str(model), "--test-images", "1000",
                        *data_flags(fashion_data_dir))
    assert exported.returncode == 0, exported.stderr
    onnx_rows = [json.loads(line) for line in
                 run_tool("predict", directory, "--model", str(model), "--json").stdout.splitlines()]
    assert [row["class"] for row in onnx_rows] == [row["class"] for row in rows]
    table = run_tool("predict", directory, "--model", str(model)).stdout.splitlines()  # onnxruntime: 0.5 s
    assert table[0].split()[:2] == ["file", "class"] and any("Trouser" in line for line in table[1:])
