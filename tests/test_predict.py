"""bin/predict on real image files made from MNIST test digits, and on bad files."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_tool
from PIL import Image

from mnist_jax.inference.inputs import read_inputs
from mnist_jax.inference.predict import predict, predict_probs
from mnist_jax.training import checkpoint

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
    huge = directory / "huge.png"
    Image.new("L", (400, 300), 255).save(huge)  # over the --max-pixels given below
    return {text: "not an image", empty: "empty file", truncated: "damaged or truncated", blank: "no ink found",
            huge: "larger than the 100,000-pixel limit; crop or shrink it (or raise --max-pixels)",
            directory / "missing.png": "no such file"}


def test_predict_reads_users_files_and_reports_each_bad_one(trained_run, image_files, bad_files):
    paths = [str(p) for p in image_files] + [str(p) for p in bad_files]
    result = run_tool("predict", *paths, "--run", str(trained_run.path), "--json", "--top-k", "3",
                      "--max-pixels", "100000")
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    for path, reason in bad_files.items():
        assert any(line.startswith(f"error: {path}: ") and reason in line for line in errors), (path, errors)
    assert errors[-1] == f"{len(bad_files)} of {len(paths)} files could not be read"
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(p) for p in image_files]
    correct = sum(row["label"] == image_files[Path(row["file"])] for row in rows)
    assert correct >= 0.9 * len(rows)
    for row in rows:
        probabilities = [entry["probability"] for entry in row["top_k"]]
        assert row["top_k"][0] == {"class": row["class"], "label": row["label"], "probability": row["probability"]}
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
        assert row["uncertain"] is False  # no --min-confidence


def test_a_directory_as_a_table_with_runner_up_and_uncertain_marks(trained_run, image_files):
    directory = next(iter(image_files)).parent
    csv_run = run_tool("predict", str(directory), "--run", str(trained_run.path), "--csv")
    assert csv_run.returncode == 0, csv_run.stderr
    records = list(csv.DictReader(io.StringIO(csv_run.stdout)))
    assert sorted(Path(r["file"]) for r in records) == sorted(image_files)
    threshold = float(np.median([float(r["probability"]) for r in records]))  # about half are under it
    table = run_tool("predict", str(directory), "--run", str(trained_run.path), "--min-confidence", str(threshold))
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["file", "digit", "probability", "runner-up"]
    by_file = {r["file"]: r for r in records}
    for line in lines:
        name, digit, probability, runner_up, runner_up_probability, *mark = line.split()
        record = by_file[name]
        assert (int(digit), int(runner_up)) == (int(record["digit"]), int(record["runner_up"]))
        assert float(probability.rstrip("%")) == pytest.approx(100 * float(record["probability"]), abs=0.006)
        assert mark == (["uncertain"] if float(record["probability"]) < threshold else [])
    assert 0 < sum(line.endswith("uncertain") for line in lines) < len(lines)


def test_show_preprocessed_writes_exactly_what_the_model_saw(trained_run, image_files, tmp_path):
    scans = [path for path in image_files if path.suffix == ".jpg"][:3]
    result = run_tool("predict", *map(str, scans), "--run", str(trained_run.path), "--show-preprocessed",
                      str(tmp_path / "seen"))
    assert result.returncode == 0, result.stderr
    for path in scans:
        written = tmp_path / "seen" / ("_".join(path.parts[1:]) + ".png")
        np.testing.assert_array_equal(np.asarray(Image.open(written))[:, :, None], read_inputs(path)[0])


def test_number_reads_a_row_of_digits_with_a_probability_each(trained_run, mnist, tmp_path):
    indices = [1, 2, 3, 4]  # labels 2 1 0 4
    strips = [np.pad(np.kron(mnist.test_images[i, :, :, 0], np.ones((4, 4), np.uint8)), ((0, 0), (0, 20)))
              for i in indices]
    page = 240 - 0.9 * np.pad(np.concatenate(strips, axis=1), 30)
    Image.fromarray(page.astype(np.uint8)).save(tmp_path / "2104.jpg", quality=90)
    result = run_tool("predict", str(tmp_path / "2104.jpg"), "--run", str(trained_run.path), "--number", "--json")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["number"] == "".join(str(mnist.test_labels[i]) for i in indices)
    assert [d["label"] for d in row["digits"]] == [int(c) for c in row["number"]]
    assert all(0.5 < d["probability"] <= 1 for d in row["digits"])


def test_predict_without_a_run_says_how_to_get_one(tmp_path, image_files):
    result = run_tool("predict", str(next(iter(image_files))), "--run", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: run directory {tmp_path / 'nothing'} does not exist; "
                                     "train one with bin/train or pass --run DIR")


def test_predicting_any_number_of_images_compiles_once(trained_run, mnist):
    state = checkpoint.restore(trained_run.path).state
    compiled_before = predict_probs._cache_size()  # other tests may have compiled it for this state already
    for count in (1, 5, 130, 300):
        probabilities = predict(state, mnist.test_images[:count])
        assert probabilities.shape == (count, 10)
    assert predict_probs._cache_size() - compiled_before <= 1
    np.testing.assert_allclose(predict(state, mnist.test_images[:5]), probabilities[:5], atol=1e-6)


def test_a_reader_that_leaves_early_stops_predict_quietly(trained_run, image_files):
    """`bin/predict DIR | head`: once the pipe's reader has gone, predict stops without a traceback."""
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()  # gone before predict writes its first line
    command = [sys.executable, "-m", "mnist_jax.cli.predict", str(next(iter(image_files)).parent), "--run",
               str(trained_run.path)]
    result = subprocess.run(command, stdout=reader.stdin, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 141 and result.stderr == ""
