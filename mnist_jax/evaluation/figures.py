"""What the speed figures share: the spread of repeats, the CPU they ran on, whole bin/predict processes.
JAX-free."""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
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


# bin/predict run in this interpreter's place, its own peak resident memory (VmHWM, KiB) printed last on stderr:
# a child's rusage would also count the memory of the process it was forked from, up to exec.
_PREDICT_REPORTING_PEAK = """
import runpy, sys
sys.argv = ["predict", *sys.argv[1:]]
try:
    runpy.run_module("mnist_jax.cli.predict", run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")), file=sys.stderr)
"""


def predict_processes(arguments: list[str], repeats: int, env: dict[str, str] | None = None) -> dict:
    """Runs whole `bin/predict ARGUMENTS` processes `repeats` times; returns {"seconds": spread(wall-clock
    seconds), "peak_rss_mib": spread(peak resident memory)}. Linux (/proc).

    Raises RuntimeError with the tail of its stderr when one fails.
    """
    command = [sys.executable, "-c", _PREDICT_REPORTING_PEAK, *arguments]
    seconds, memory = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        seconds.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"bin/predict exited with {result.returncode}: {result.stderr[-2000:]}")
        memory.append(int(result.stderr.split()[-1]) / 1024)
    return {"seconds": spread(seconds), "peak_rss_mib": spread(memory)}
