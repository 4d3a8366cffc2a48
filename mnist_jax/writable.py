"""The one check that a directory can be written: writing to it."""

from __future__ import annotations

import os
from pathlib import Path


def check_writable(directory: Path) -> None:
    """Creates and deletes an empty file in `directory`; raises OSError when either fails.

    Writing is the test because permission bits are not: root passes them, while an immutable
    directory or a read-only mount still refuses the write.
    """
    probe = Path(directory) / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()


def make_writable(directory: Path) -> None:
    """Creates `directory` (and its parents) if needed, then `check_writable`s it; raises OSError."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    check_writable(directory)
