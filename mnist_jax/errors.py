"""The errors the library raises for problems its caller can fix, each carrying what happened.

Messages say what is wrong, in the library's terms; the command-line layer (`cli/advice.py`)
adds what to type. Every class derives from `MnistJaxError`.
"""

from __future__ import annotations

from pathlib import Path


class MnistJaxError(Exception):
    """A problem the caller can fix: bad input, missing or damaged files, an unreachable data source."""


class ConfigError(MnistJaxError):
    """An unknown preset, section or field, or a value outside its allowed range."""


class DataError(MnistJaxError):
    """MNIST cannot be fetched, read or verified. `prepared`: the prepared copy is what failed."""

    def __init__(self, message: str, prepared: bool = False):
        super().__init__(message)
        self.prepared = prepared


class ImageError(MnistJaxError):
    """A user's image cannot be used. `path`: the file (None for bytes without a name)."""

    def __init__(self, problem: str, path: Path | str | None = None):
        super().__init__(f"{path}: {problem}" if path is not None else problem)
        self.problem, self.path = problem, path

    def at(self, path: Path | str) -> ImageError:
        """Returns the same error naming `path` (keeps a path it has)."""
        if self.path is not None:
            return self
        error = type(self).__new__(type(self))
        ImageError.__init__(error, self.problem, path)
        return error


class NotAnImage(ImageError):
    """The file is missing, empty, not an image, or damaged."""


class ImageTooLarge(ImageError):
    """The image has more pixels than the limit. `limit`: that many pixels."""

    def __init__(self, problem: str, path: Path | str | None = None, limit: int = 0):
        super().__init__(problem, path)
        self.limit = limit

    def at(self, path: Path | str) -> ImageError:
        error = super().at(path)
        error.limit = self.limit
        return error


class NoInk(ImageError):
    """The image holds no ink: blank, or too faint to tell from the paper."""


class RunError(MnistJaxError):
    """A run directory or one of its checkpoints cannot be used. `path`: that directory."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class NoCheckpoint(RunError):
    """No run, or no checkpoint of the requested step, is at `path`."""


class DamagedCheckpoint(RunError):
    """A checkpoint step whose files cannot be read back. `path`: its checkpoints directory."""

    def __init__(self, directory: Path, step: int, reason: str):
        super().__init__(f"checkpoint step {step} in {directory} is damaged ({reason})", directory)
        self.step, self.reason = step, reason
        self.newest_intact: int | None = None  # set by whoever looked for an older step that restores


class CheckpointFormatError(RunError):
    """A checkpoint of another or unknown format. `found`: the format version it records (None: none)."""

    def __init__(self, message: str, path: Path, found: int | None):
        super().__init__(message, path)
        self.found = found


class OtherConfig(RunError):
    """A run directory holds a run of another config than the one given. `differences`: "field: a -> b"."""

    def __init__(self, path: Path, differences: list[str]):
        super().__init__(f"{path} holds a run of another config ({'; '.join(differences)})", path)
        self.differences = differences


class Diverged(RunError):
    """Training produced non-finite values. `last_good`: the newest checkpoint step kept (None: none)."""

    def __init__(self, what: str, path: Path, last_good: int | None):
        kept = f"the last good checkpoint is step {last_good}" if last_good is not None else \
            "no checkpoint had been written"
        super().__init__(f"{what}; {kept}", path)
        self.last_good = last_good


class NotWritable(MnistJaxError):
    """A file or directory cannot be written. `path`: it; `reason`: the system's words."""

    def __init__(self, message: str, path: Path, reason: str):
        super().__init__(message)
        self.path, self.reason = path, reason


class ClusterError(MnistJaxError):
    """Several processes cannot form or keep their cluster."""
