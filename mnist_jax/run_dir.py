"""What a run directory holds, in one place: its files, its config, and which config continues it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from mnist_jax import config as config_lib
from mnist_jax.config import Config
from mnist_jax.errors import ConfigError, NoCheckpoint, OtherConfig, RunError


def saved_steps(directory: Path) -> list[int]:
    """Returns the completed steps in a checkpoints directory, ascending (a save in flight has a tmp name)."""
    return sorted(int(child.name) for child in Path(directory).glob("*") if child.name.isdigit())


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A bin/train run directory: config.json, metrics.jsonl (one line per epoch), accuracy.png and
    loss.png, checkpoints/, summary.json (when finished) and, for a distilled run, teachers.npy or
    teachers.json (see `training.teachers`)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def discarded(self) -> Path:
        """Where steps after a --from-step go: kept, not deleted."""
        return self.path / "discarded-checkpoints"

    @property
    def teacher_probabilities(self) -> Path:
        return self.path / "teachers.npy"

    @property
    def teacher_steps(self) -> Path:
        return self.path / "teachers.json"

    def plot(self, name: str) -> Path:
        """The figure `name` ("accuracy" or "loss") of the run's history."""
        return self.path / f"{name}.png"

    def outputs(self) -> list[Path]:
        """The files training writes beside checkpoints/ (what starting over deletes)."""
        return [self.config_file, self.metrics, self.summary, self.plot("accuracy"), self.plot("loss"),
                self.teacher_probabilities, self.teacher_steps]

    def read_config(self) -> Config | None:
        """Returns the run's config, None for a new run. Raises RunError when config.json cannot be read,
        or when checkpoints exist without it."""
        if not self.config_file.exists():
            if self.checkpoints.exists():
                raise RunError(f"{self.path} holds checkpoints but no config.json", self.path)
            return None
        try:
            return config_lib.from_dict(json.loads(self.config_file.read_text()))
        except (OSError, ValueError, ConfigError) as error:
            raise RunError(f"cannot read {self.config_file} ({error})", self.path) from None

    def check_continues(self, config: Config) -> None:
        """Raises OtherConfig naming the differing fields unless `config` continues the run here."""
        saved = self.read_config()
        if saved is not None and (found := config_lib.differences(saved, config)):
            raise OtherConfig(self.path, found)

    def write_config(self, config: Config) -> None:
        """Writes config.json for a new run; for an existing one, checks that `config` continues it."""
        if self.config_file.exists():
            self.check_continues(config)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(config_lib.to_dict(config), indent=2) + "\n")

    def read_summary(self) -> dict | None:
        """Returns summary.json of a finished run, None while it is not finished."""
        return json.loads(self.summary.read_text()) if self.summary.exists() else None

    def test_accuracy(self, step: int) -> float | None:
        """Returns the test accuracy summary.json records for checkpoint `step`; None when the run is not
        finished or tested another step."""
        summary = self.read_summary()
        return summary["test_accuracy"] if summary and summary.get("best_step") == step else None

    def read_metrics(self) -> list[dict]:
        """Returns metrics.jsonl's records, one per epoch ([] before the first epoch ends)."""
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines()]

    def clear(self) -> None:
        """Deletes the run's checkpoints and outputs, so that training starts over here."""
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        for path in self.outputs():
            path.unlink(missing_ok=True)

    def discard_after(self, step: int) -> None:
        """Moves the checkpoint steps after `step` to discarded-checkpoints/, so training resumes from `step`.

        Raises NoCheckpoint when there is no step `step`.
        """
        steps = saved_steps(self.checkpoints)
        if step not in steps:
            raise NoCheckpoint(f"no checkpoint step {step} in {self.checkpoints}; available: "
                               f"{', '.join(map(str, steps)) or 'none'}", self.path)
        self.discarded.mkdir(exist_ok=True)
        for later in (s for s in steps if s > step):
            (self.checkpoints / str(later)).rename(self.discarded / f"{later}-{time.strftime('%Y%m%d-%H%M%S')}")
