"""The evaluation's renders: reproducible from a seed, real image files, the digit still in them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import run_tool
from PIL import Image

from mnist_jax.evaluation.renders import CONDITIONS, find_fonts, pen_coverage, render_font_digit
from mnist_jax.inference.predict import predict
from mnist_jax.inference.preprocess import load_grayscale, to_mnist
from mnist_jax.training import checkpoint


@pytest.fixture(scope="module")
def state(trained_run):
    return checkpoint.restore(trained_run.path).state


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_each_condition_is_a_reproducible_image_file_the_pipeline_reads(mnist, state, condition):
    digits, labels = mnist.test_images[:5, :, :, 0], mnist.test_labels[:5]
    files = [CONDITIONS[condition](digit, np.random.default_rng(7)) for digit in digits]
    assert files[0] == CONDITIONS[condition](digits[0], np.random.default_rng(7))
    for blob in files:
        with Image.open(io.BytesIO(blob)) as image:
            assert image.format in ("PNG", "JPEG")
    seen = np.stack([to_mnist(load_grayscale(io.BytesIO(blob))) for blob in files])
    assert np.sum(predict(state, seen).argmax(axis=1) == labels) >= 4  # the short test run's model


def test_pen_width_is_what_was_asked(mnist):
    from mnist_jax.inference.preprocess import stroke_width

    digit = mnist.test_images[0, :, :, 0]
    for pen in (0.8, 5.0):
        assert stroke_width(pen_coverage(digit, 8, pen) > 0.5) / 8 == pytest.approx(pen, rel=0.25)


@pytest.mark.skipif(not find_fonts(), reason="no handwriting fonts installed (see renders.HANDWRITING_FONT_PACKAGES)")
def test_font_digits_render_reproducibly():
    font = find_fonts()[0]
    image = render_font_digit(font, 3, np.random.default_rng(0))
    assert image == render_font_digit(font, 3, np.random.default_rng(0))
    assert load_grayscale(io.BytesIO(image)).shape[0] > 28


def test_eval_inputs_prints_the_per_condition_table_and_a_gallery(trained_run, data_dir, tmp_path):
    result = run_tool("eval_inputs", "--run", str(trained_run.path), "--data-dir", str(data_dir),
                      "--data-source", "prepared", "--conditions", "paper,noise,form-cell", "--per-condition", "30",
                      "--fonts-per-digit", "0", "--scans", "40", "--gallery", str(tmp_path / "gallery.png"))
    assert result.returncode == 0, result.stderr
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    table = {name.strip(): (int(n.replace(",", "")), *(float(cell.strip(" %")) for cell in cells))
             for name, n, *cells in rows[1:]}  # rows[0]: the header
    assert set(table) == {"paper", "noise", "form-cell", "**all MNIST renders**", "sklearn-digits"}
    assert table["**all MNIST renders**"][0] == 90 and table["sklearn-digits"][0] == 40
    for name, (_, naive, quick, ours, ece) in table.items():
        assert naive < 50 and 0 <= ece <= 100  # the naive resize fails everywhere
        assert ours >= (70 if name == "sklearn-digits" else 85)  # the short test run's model
    assert table["noise"][2] < 50 < table["noise"][3]  # the quick baseline fails on noise, the pipeline does not
    with Image.open(tmp_path / "gallery.png") as gallery:
        assert gallery.format == "PNG" and gallery.width > 100


def test_scans_are_written_as_dark_ink_on_white_at_64_px():
    from mnist_jax.evaluation.renders import render_scan

    pixels = np.zeros((8, 8))
    pixels[1:7, 3:5] = 16  # a 1, on the 0-16 scale of optdigits
    for nearest in (True, False):
        with Image.open(io.BytesIO(render_scan(pixels, nearest))) as image:
            gray = np.asarray(image)
        assert gray.shape == (64, 64) and gray[0, 0] == 255 and gray[32, 31] < 64
