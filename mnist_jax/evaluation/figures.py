"""What the speed figures share: the spread of repeats, the CPU they ran on, whole bin/predict processes.
JAX-free."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def spread(values: list[float | None]) -> dict:
    """Returns {"median", "min", "max", "values"} of the measured values (None: not reached)."""
    reached = [v for v in values if v is not None]
    middle = statistics.median(reached) if reached else None
    return {"median": middle, "min": min(reached, default=None), "max": max(reached, default=None), "values": values}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC"), else what the platform module says."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def predict_processes(arguments: list[str], repeats: int, env: dict[str, str] | None = None) -> dict:
    """Runs whole `bin/predict ARGUMENTS` processes (its Python entry point) `repeats` times; returns
    {"seconds": spread(wall-clock seconds), "peak_rss_mib": spread(peak resident memory)}.

    Raises RuntimeError with the tail of its stderr when one fails.
    """
    command = [sys.executable, "-m", "mnist_jax.cli.predict", *arguments]
    seconds, memory = [], []
    for _ in range(repeats):
        with tempfile.TemporaryFile("w+") as errors:
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
            _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
            seconds.append(time.perf_counter() - started)
            if os.waitstatus_to_exitcode(status) != 0:
                errors.seek(0)
                raise RuntimeError(f"bin/predict exited with {os.waitstatus_to_exitcode(status)}: "
                                   f"{errors.read()[-2000:]}")
        memory.append(usage.ru_maxrss / 1024)  # KiB on Linux
    return {"seconds": spread(seconds), "peak_rss_mib": spread(memory)}
