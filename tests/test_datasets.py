"""The data sets beyond MNIST: Fashion-MNIST from Debian's package, and KMNIST and EMNIST on small files
written here in their canonical formats (no source of their real data is reachable from the tests)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_tool

from mnist_jax.cli.advice import advice
from mnist_jax.data import catalog, dataset, sources
from mnist_jax.data.sources import DataArrays
from mnist_jax.errors import SourceError

TRAIN, TEST = 26, 13  # small splits: every letter once in train (twice for 52), each prepare takes < 1 s


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX writer independent of the package's reader: magic 0x0803/0x0801, big-endian sizes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def small_arrays(classes: int, offset: int = 0, seed: int = 0) -> DataArrays:
    """Random, asymmetric images (a transposition shows) and labels offset..offset+classes-1, cycling."""
    rng = np.random.default_rng(seed)
    return DataArrays(rng.integers(0, 256, (TRAIN, 28, 28, 1), dtype=np.uint8),
                      (np.arange(TRAIN) % classes + offset).astype(np.int64),
                      rng.integers(0, 256, (TEST, 28, 28, 1), dtype=np.uint8),
                      (np.arange(TEST) % classes + offset).astype(np.int64))


def small(name: str, **changes) -> catalog.DatasetSpec:
    """The catalog's spec of `name` with the small splits' sizes and no per-class counts or recorded sha256."""
    return dataclasses.replace(catalog.get(name), train_images=TRAIN, test_images=TEST, train_class_counts=None,
                               test_class_counts=None, decoded_sha256=None, **changes)


def write_idx_files(directory, spec, stored: DataArrays) -> dict[str, bytes]:
    """Writes `spec`'s four .gz IDX files (as stored: EMNIST transposed) into `directory`; returns name -> bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for field, stem in spec.stems.items():
        array = getattr(stored, field)
        data = gzip.compress(idx_bytes(array[..., 0] if array.ndim == 4 else array), compresslevel=1, mtime=0)
        (directory / f"{stem}.gz").write_bytes(data)
        files[f"{stem}.gz"] = data
    return files


def letters_mapping(spec) -> str:
    return "".join(f"{label} {ord(c.upper())} {ord(c)}\n" for label, c in enumerate(spec.classes, 1))


def digits_mapping(spec) -> str:
    return "".join(f"{label} {ord(c)}\n" for label, c in enumerate(spec.classes))


def write_emnist_zip(path, spec, stored: DataArrays, mapping: str | None) -> bytes:
    """EMNIST's gzip.zip layout: gzip/emnist-<config>-*-ubyte.gz and gzip/emnist-<config>-mapping.txt."""
    files = write_idx_files(path.parent / f"{path.stem}-files", spec, stored)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"gzip/{name}", data)
        if mapping is not None:
            archive.writestr(f"gzip/emnist-{spec.builder_config}-mapping.txt", mapping)
    return path.read_bytes()


def transposed(arrays: DataArrays) -> DataArrays:
    return DataArrays(arrays.train_images.transpose(0, 2, 1, 3), arrays.train_labels,
                      arrays.test_images.transpose(0, 2, 1, 3), arrays.test_labels)


def assert_tfds_reads(data_dir, spec, stored: DataArrays, indices=None):
    """tfds's own builder of `spec.name` reads back the stored records, in order."""
    source = tfds.data_source(spec.name, data_dir=str(data_dir), download=False)
    for split, images, labels in (("train", stored.train_images, stored.train_labels),
                                  ("test", stored.test_images, stored.test_labels)):
        assert len(source[split]) == len(labels)
        for index in indices or range(len(labels)):
            record = source[split][index]
            np.testing.assert_array_equal(record["image"], images[index])
            assert record["label"] == labels[index]


def assert_same(a: DataArrays, b: DataArrays):
    for field in DataArrays.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# --- Fashion-MNIST, from Debian's dataset-fashion-mnist (make fashion-mnist installs it)


def test_fashion_from_debian_has_its_class_counts_and_recorded_sha256(fashion_data_dir):
    spec = catalog.FASHION_MNIST
    fashion = dataset.load(fashion_data_dir, spec)
    assert fashion.train_images.shape == (60000, 28, 28, 1) and fashion.test_images.dtype == np.uint8
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert dataset.arrays_sha256(fashion) == catalog.FASHION_DECODED_SHA256
    assert (fashion_data_dir / "mnist_jax_cache" / "fashion_mnist-3.0.1-decoded.npz").exists()
    assert dataset.prepare(fashion_data_dir, spec=spec, log=lambda line: None) == "prepared"


def test_tfds_stock_fashion_builder_reads_the_prepared_directory(fashion_data_dir):
    spec = catalog.FASHION_MNIST
    builder = tfds.builder("fashion_mnist:3.0.1", data_dir=str(fashion_data_dir))
    assert type(builder).__module__.startswith("tensorflow_datasets.")  # tfds's own, not the project's
    assert builder.info.features["label"].names == list(catalog.FASHION_CLASSES)
    assert builder.info.splits["train"].num_examples == 60000
    assert_tfds_reads(fashion_data_dir, spec, dataset.load(fashion_data_dir, spec), indices=(0, 31337 % 10000, 9999))


def test_debian_source_checks_the_decompressed_content_not_the_gzip_bytes(tmp_path, monkeypatch):
    spec = small("fashion_mnist")
    stored = small_arrays(10)
    write_idx_files(tmp_path / "debian", spec, stored)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "debian")
    with pytest.raises(SourceError, match="train-images-idx3-ubyte.gz decompresses to other content") as error:
        dataset.prepare(tmp_path / "tfds", source="debian", spec=spec)
    assert error.value.source == "debian"
    # With the small files' own sha256 recorded, recompressed copies of them (other gzip bytes) verify.
    recorded = tuple((stem, hashlib.sha256(idx_bytes(a[..., 0] if a.ndim == 4 else a)).hexdigest())
                     for stem, a in ((s, getattr(stored, f)) for f, s in spec.stems.items()))
    for path in (tmp_path / "debian").iterdir():
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=9, mtime=12345))
    spec = dataclasses.replace(spec, idx_sha256=recorded)
    assert dataset.prepare(tmp_path / "tfds", source="debian", spec=spec, log=lambda line: None) == "debian"
    assert_same(dataset.load(tmp_path / "tfds", spec), stored)


def test_a_missing_debian_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    with pytest.raises(SourceError) as error:
        dataset.prepare(tmp_path, source="debian", spec=catalog.FASHION_MNIST)
    assert str(error.value).endswith("apt-get install dataset-fashion-mnist") and advice(error.value) == ""


def test_a_source_not_offered_is_refused_in_one_line_naming_those_that_are(tmp_path):
    with pytest.raises(SourceError, match="KMNIST has no 'registry' source; choose one of: auto, prepared, "
                                          "canonical, files"):
        dataset.prepare(tmp_path, source="registry", spec=catalog.get("kmnist"))
    result = run_tool("prepare_data", "--data.name", "kmnist", "--data-dir", str(tmp_path), "--data-source", "debian")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: KMNIST has no 'debian' source; choose one of: auto, prepared, canonical, files"]


# --- KMNIST on small IDX files


def test_kmnist_from_a_users_files_is_written_as_tfds_lays_it_out(tmp_path):
    spec = small("kmnist")
    stored = small_arrays(10, seed=1)
    write_idx_files(tmp_path / "files", spec, stored)
    assert dataset.prepare(tmp_path / "tfds", source="files", files_dir=tmp_path / "files", spec=spec,
                           log=lambda line: None) == "files"
    directory = tmp_path / "tfds" / "kmnist" / "3.0.1"
    assert dataset.prepared_dir(tmp_path / "tfds", spec) == directory and dataset.is_prepared(tmp_path / "tfds", spec)
    assert {p.name for p in directory.iterdir()} >= {"dataset_info.json", "features.json", "label.labels.txt",
                                                     "kmnist-train.array_record-00000-of-00001",
                                                     "kmnist-test.array_record-00000-of-00001"}
    assert tfds.builder("kmnist", data_dir=str(tmp_path / "tfds")).info.features["label"].names == \
        list(catalog.KMNIST_CLASSES)
    assert_tfds_reads(tmp_path / "tfds", spec, stored)  # every record, in the files' order
    assert_same(dataset.load(tmp_path / "tfds", spec), stored)


def test_the_canonical_source_checks_size_and_sha256_of_what_it_downloads(tmp_path):
    spec = small("kmnist")
    files = write_idx_files(tmp_path / "server", spec, small_arrays(10, seed=2))
    published = tuple((name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items())
    served = small("kmnist", canonical_url=(tmp_path / "server").as_uri() + "/", canonical_files=published)
    assert dataset.prepare(tmp_path / "a", source="canonical", spec=served, log=lambda line: None) == "canonical"
    assert sorted(p.name for p in (tmp_path / "a" / "downloads" / "kmnist").iterdir()) == sorted(files)
    # Already downloaded and verified: no network needed (the URL leads nowhere).
    offline = dataclasses.replace(served, canonical_url="https://unreachable.invalid/kmnist/")
    assert dataset.prepare(tmp_path / "a", source="canonical", spec=offline, log=lambda line: None) == "canonical"
    # A file whose sha256 is not the published one is refused, and not kept.
    wrong = dataclasses.replace(served, canonical_files=((published[0][0], published[0][1], "0" * 64),
                                                         *published[1:]))
    with pytest.raises(SourceError, match="does not match its published size and sha256") as error:
        dataset.prepare(tmp_path / "b", source="canonical", spec=wrong)
    assert error.value.source == "canonical" and not dataset.is_prepared(tmp_path / "b", spec)
    assert not (tmp_path / "b" / "downloads" / "kmnist" / published[0][0]).exists()


# --- EMNIST on a small gzip.zip


def test_emnist_letters_are_stored_transposed_with_labels_1_to_26_and_load_upright_as_0_to_25(tmp_path):
    spec = small("emnist/letters")
    upright = small_arrays(26, offset=1, seed=3)
    stored = transposed(upright)  # as EMNIST's files hold them
    write_emnist_zip(tmp_path / "gzip.zip", spec, stored, letters_mapping(spec))
    assert dataset.prepare(tmp_path / "tfds", source="files", files_dir=tmp_path / "gzip.zip", spec=spec,
                           log=lambda line: None) == "files"
    directory = tmp_path / "tfds" / "emnist" / "letters" / "3.1.0"
    assert (directory / "emnist-train.array_record-00000-of-00001").exists()
    builder = tfds.builder("emnist/letters", data_dir=str(tmp_path / "tfds"))
    assert builder.info.features["label"].num_classes == 37
    assert_tfds_reads(tmp_path / "tfds", spec, stored)  # on disk: transposed, labels 1-26, as tfds serves them
    loaded = dataset.load(tmp_path / "tfds", spec)
    np.testing.assert_array_equal(loaded.train_images, upright.train_images)
    np.testing.assert_array_equal(loaded.train_labels, upright.train_labels - 1)
    assert loaded.train_labels.min() == 0 and loaded.train_labels.max() == 25 and loaded.train_labels.dtype == np.int64
    assert (tmp_path / "tfds" / "mnist_jax_cache" / "emnist-letters-3.1.0-decoded.npz").exists()


def test_emnist_digits_from_the_canonical_zip_or_a_directory_of_its_files(tmp_path):
    spec = small("emnist/digits")
    upright = small_arrays(10, seed=4)
    data = write_emnist_zip(tmp_path / "server" / "gzip.zip", spec, transposed(upright), digits_mapping(spec))
    served = small("emnist/digits", canonical_url=(tmp_path / "server" / "gzip.zip").as_uri(),
                   canonical_files=(("gzip.zip", len(data), hashlib.sha256(data).hexdigest()),))
    assert dataset.prepare(tmp_path / "a", source="canonical", spec=served, log=lambda line: None) == "canonical"
    assert_same(dataset.load(tmp_path / "a", spec), upright)
    assert (tmp_path / "a" / "downloads" / "emnist" / "gzip.zip").exists()
    # The extracted gzip/ folder of the zip, as a user may keep it.
    with zipfile.ZipFile(tmp_path / "server" / "gzip.zip") as archive:
        archive.extractall(tmp_path / "extracted")
    assert dataset.prepare(tmp_path / "b", source="files", files_dir=tmp_path / "extracted", spec=spec,
                           log=lambda line: None) == "files"
    assert_same(dataset.load(tmp_path / "b", spec), upright)
    # A zip of another size than the published one is refused.
    short = dataclasses.replace(served, canonical_files=(("gzip.zip", len(data) + 1, served.canonical_files[0][2]),))
    with pytest.raises(SourceError, match="gzip.zip does not match its published size and sha256"):
        dataset.prepare(tmp_path / "c", source="canonical", spec=short)


def test_an_emnist_mapping_that_disagrees_with_the_classes_is_refused(tmp_path):
    spec = small("emnist/letters")
    stored = transposed(small_arrays(26, offset=1, seed=5))
    bad = letters_mapping(spec).replace("1 65 97", "1 66 98")  # label 1 is A/a, not B/b
    write_emnist_zip(tmp_path / "gzip.zip", spec, stored, bad)
    with pytest.raises(SourceError, match="mapping.txt line 1 maps label 1 to 'Bb', where EMNIST Letters has 'a'"):
        dataset.prepare(tmp_path / "tfds", source="files", files_dir=tmp_path / "gzip.zip", spec=spec)
    assert not dataset.is_prepared(tmp_path / "tfds", spec)


def test_emnist_letters_labels_outside_1_to_26_are_refused(tmp_path):
    spec = small("emnist/letters")
    stored = transposed(small_arrays(26, offset=0, seed=6))  # 0-25: label 0 is no letter
    write_emnist_zip(tmp_path / "gzip.zip", spec, stored, None)
    with pytest.raises(SourceError, match="failed its check of training labels range"):
        dataset.prepare(tmp_path / "tfds", source="files", files_dir=tmp_path / "gzip.zip", spec=spec)
