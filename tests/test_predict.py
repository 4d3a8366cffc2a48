"""bin/predict on real image files made from MNIST test digits, and on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_tool
from PIL import Image

DIGITS = 12  # the first test digits, each written three ways


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, mnist):
    """Writes real test digits as users' files; returns {path: label}."""
    directory = tmp_path_factory.mktemp("images")
    files = {}
    for index in range(DIGITS):
        ink = mnist.test_images[index, :, :, 0]
        label = int(mnist.test_labels[index])
        plain = directory / f"plain-{index}.png"  # MNIST itself: white on black, 28x28
        Image.fromarray(ink).save(plain)
        paper = np.full((230, 180), 235, np.uint8)  # dark ink on light paper, 5x larger, off centre
        paper[40 + index : 180 + index, 20 : 160] = 235 - np.kron(ink, np.ones((5, 5), np.uint8)) * 0.9
        scan = directory / f"scan-{index}.jpg"
        Image.fromarray(paper).save(scan, quality=85)
        colour = np.zeros((100, 120, 3), np.uint8)  # blue ink on yellow paper, RGB
        colour[...] = (250, 240, 170)
        strength = np.kron(ink, np.ones((3, 3), np.uint8))[..., None] / 255.0
        colour[10:94, 30:114] = ((1 - strength) * (250, 240, 170) + strength * (20, 30, 140)).astype(np.uint8)
        drawing = directory / f"colour-{index}.png"
        Image.fromarray(colour).save(drawing)
        files.update({plain: label, scan: label, drawing: label})
    return files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, image_files):
    directory = tmp_path_factory.mktemp("bad")
    text = directory / "notes.png"
    text.write_text("not an image at all")
    empty = directory / "empty.jpg"
    empty.write_bytes(b"")
    truncated = directory / "truncated.png"
    truncated.write_bytes(next(iter(image_files)).read_bytes()[:60])
    blank = directory / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    return {text: "not an image", empty: "not an image", truncated: "damaged or truncated", blank: "no ink found",
            directory / "missing.png": "no such file"}


def test_predict_reads_users_files_and_reports_each_bad_one(trained_run, image_files, bad_files):
    paths = [str(p) for p in image_files] + [str(p) for p in bad_files]
    result = run_tool("predict", *paths, "--run", str(trained_run.path), "--json", "--top-k", "3")
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    for path, reason in bad_files.items():
        assert any(line.startswith(f"error: {path}: ") and reason in line for line in errors), (path, errors)
    assert errors[-1] == f"{len(bad_files)} of {len(paths)} files could not be read"
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(p) for p in image_files]
    correct = sum(row["digit"] == image_files[Path(row["file"])] for row in rows)
    assert correct >= 0.9 * len(rows)
    for row in rows:
        probabilities = [entry["probability"] for entry in row["top_k"]]
        assert row["top_k"][0] == {"digit": row["digit"], "probability": row["probability"]}
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6


def test_predict_prints_a_table_by_default(trained_run, image_files):
    path, label = next(iter(image_files.items()))
    result = run_tool("predict", str(path), "--run", str(trained_run.path))
    assert result.returncode == 0, result.stderr
    header, line = result.stdout.splitlines()
    assert header.split() == ["file", "digit", "probability"]
    name, digit, probability = line.split()
    assert name == str(path) and int(digit) == label and 50 < float(probability.rstrip("%")) <= 100


def test_predict_without_a_run_says_how_to_get_one(tmp_path, image_files):
    result = run_tool("predict", str(next(iter(image_files))), "--run", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: run directory {tmp_path / 'nothing'} does not exist; "
                                     "train one with bin/train or pass --run DIR")
