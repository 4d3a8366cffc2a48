"""The errors the library raises for problems its caller can fix, each carrying what happened.

Messages say what is wrong, in the library's terms; the command-line layer (`cli/advice.py`)
adds what to type. Every class derives from `MnistJaxError`.
"""

from __future__ import annotations

import copy
from pathlib import Path


class MnistJaxError(Exception):
    """A problem the caller can fix: bad input, missing or damaged files, an unreachable data source."""


class ConfigError(MnistJaxError):
    """An unknown preset, section or field, or a value outside its allowed range."""


class DataError(MnistJaxError):
    """A data set cannot be fetched, read or verified. `data_dir`: the tfds data directory concerned;
    `dataset`: the data set's name ("mnist", "emnist/letters"; see `data/catalog.py`)."""

    def __init__(self, message: str, data_dir: Path | None = None, dataset: str = "mnist"):
        super().__init__(message)
        self.data_dir, self.dataset = data_dir, dataset


class NotPrepared(DataError):
    """The data directory holds no prepared copy of the data set."""


class DamagedData(DataError):
    """The prepared data set is incomplete, unreadable or fails its checks."""


class SourceError(DataError):
    """A source of a raw data set cannot be reached, is not offered for it, or its files are not that data set.
    `source`: its name ("canonical", "registry", "debian", "files", "idx", "auto")."""

    def __init__(self, message: str, source: str, data_dir: Path | None = None, dataset: str = "mnist"):
        super().__init__(message, data_dir, dataset)
        self.source = source


class SourceNotOffered(SourceError):
    """The source named is not one of the data set's (the registry for Fashion-MNIST). `offered`: those that are."""

    def __init__(self, message: str, source: str, offered: tuple[str, ...], data_dir: Path | None = None,
                 dataset: str = "mnist"):
        super().__init__(message, source, data_dir, dataset)
        self.offered = offered


class ImageError(MnistJaxError):
    """A user's image cannot be used. `path`: the file (None for bytes without a name)."""

    def __init__(self, problem: str, path: Path | str | None = None):
        super().__init__(f"{path}: {problem}" if path is not None else problem)
        self.problem, self.path = problem, path

    def at(self, path: Path | str) -> ImageError:
        """Returns the same error naming `path` (one that names a file already is returned as it is)."""
        if self.path is not None:
            return self
        error = copy.copy(self)  # keeps the subclass and its fields, such as ImageTooLarge.limit
        error.path, error.args = path, (f"{path}: {self.problem}",)
        return error


class NotAnImage(ImageError):
    """The file is missing, empty, not an image, or damaged."""


class ImageTooLarge(ImageError):
    """The image has more pixels than the limit. `limit`: that many pixels."""

    def __init__(self, problem: str, path: Path | str | None = None, limit: int = 0):
        super().__init__(problem, path)
        self.limit = limit


class NoInk(ImageError):
    """The image holds no ink: blank, or too faint to tell from the paper."""


class RunError(MnistJaxError):
    """A run directory or one of its checkpoints cannot be used. `path`: that directory."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class NoCheckpoint(RunError):
    """No checkpoint of the requested step is at `path`. `no_run`: `path` is not a run at all."""

    def __init__(self, message: str, path: Path | None = None, no_run: bool = False):
        super().__init__(message, path)
        self.no_run = no_run


class DamagedCheckpoint(RunError):
    """A checkpoint step whose files cannot be read back. `path`: its checkpoints directory."""

    def __init__(self, directory: Path, step: int, reason: str):
        super().__init__(f"checkpoint step {step} in {directory} is damaged ({reason})", directory)
        self.step, self.reason = step, reason
        self.searched = False  # whether an older step that restores was looked for ...
        self.newest_intact: int | None = None  # ... and which one was found


class CheckpointFormatError(RunError):
    """A checkpoint of another or unknown format. `found`: the format version it records (None: none)."""

    def __init__(self, message: str, path: Path, found: int | None):
        super().__init__(message, path)
        self.found = found


class OtherConfig(RunError):
    """A run (or its checkpoint `step`) is of another config than the one given. `differences`: "field: a -> b"."""

    def __init__(self, path: Path, differences: list[str], step: int | None = None):
        what = f"checkpoint step {step} in {path} was written by" if step is not None else f"{path} holds a run of"
        super().__init__(f"{what} another config ({'; '.join(differences)})", path)
        self.differences, self.step = differences, step


class Diverged(RunError):
    """Training produced non-finite values. `last_good`: the newest checkpoint step kept (None: none)."""

    def __init__(self, what: str, path: Path, last_good: int | None):
        kept = f"the last good checkpoint is step {last_good}" if last_good is not None else \
            "no checkpoint had been written"
        super().__init__(f"{what}; {kept}", path)
        self.last_good = last_good


class NotWritable(MnistJaxError):
    """A file or directory cannot be written. `path`: it; `reason`: the system's words; `kind`: "run"
    (a run directory), "checkpoint", "data" (a tfds data directory) or "file"."""

    def __init__(self, message: str, path: Path, reason: str, kind: str = "file"):
        super().__init__(message)
        self.path, self.reason, self.kind = path, reason, kind


class TeacherError(RunError):
    """A distilled run's teachers, or what the run kept of them, cannot be used.

    `remedy`: "delete" (delete `path`, the kept file, to compute it again), "fresh" (the run must start
    over) or None (fix train.teachers).
    """

    def __init__(self, message: str, path: Path | None = None, remedy: str | None = None):
        super().__init__(message, path)
        self.remedy = remedy


class ClusterError(MnistJaxError):
    """Several processes cannot form their cluster. `incomplete`: some of its settings are missing."""

    def __init__(self, message: str, incomplete: bool = False):
        super().__init__(message)
        self.incomplete = incomplete


class RequestError(MnistJaxError):
    """An HTTP request to bin/serve cannot be answered. `status`: the HTTP status that says why (4xx, 503)."""

    status = 400


class PayloadTooLarge(RequestError):
    """The request body has more bytes than the server's limit."""

    status = 413


class UnsupportedMediaType(RequestError):
    """The request body is neither an image content type nor a multipart form."""

    status = 415


class Busy(RequestError):
    """The server's queue of requests is full; the client should retry later."""

    status = 503


class ModelFileError(MnistJaxError):
    """An ONNX model file cannot be used: missing, truncated, not ONNX, not written by bin/export, or of
    another input contract. `path`: the file."""

    def __init__(self, problem: str, path: Path):
        super().__init__(f"{path}: {problem}")
        self.problem, self.path = problem, Path(path)


class ExportError(MnistJaxError):
    """A run holds a layer that an ONNX graph of this exporter cannot express. `layer`: its path in the
    model's variables ("params/LayerNorm_0")."""

    def __init__(self, problem: str, layer: str):
        super().__init__(f"layer {layer}: {problem}")
        self.problem, self.layer = problem, layer
