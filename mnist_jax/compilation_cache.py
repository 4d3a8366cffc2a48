"""JAX's persistent compilation cache for the tools: where it lives, and turning it on."""

from __future__ import annotations

import os
from pathlib import Path

from mnist_jax.writable import make_writable

COMPILATION_CACHE_VARIABLE = "MNIST_JAX_COMPILATION_CACHE"


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
