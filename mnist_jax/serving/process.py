"""bin/serve as a child process on a free loopback port: for the tests, the load benchmark and the screenshot."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

URL = re.compile(r" at (http://\S+/) ")


class Server:
    """`with Server(model) as server:` starts `bin/serve --run RUN --port 0 ARGS` (`--model FILE` for an .onnx
    file), with `env` over this process's environment, and waits until it listens (`server.url`,
    `server.seconds_to_listen`); leaving the block stops it with Ctrl-C (SIGINT)."""

    def __init__(self, model: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None):
        flag = "--model" if Path(model).suffix == ".onnx" else "--run"
        self.command = [sys.executable, "-m", "mnist_jax.cli.serve", flag, str(model), "--port", "0", *args]
        self.timeout, self.env = timeout, env or {}
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.seconds_to_listen = 0.0

    def __enter__(self) -> Self:
        started = time.perf_counter()
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, **self.env,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env)
        line = self.process.stdout.readline()  # the "serving ... at URL" line, or "" if it stopped
        if not (match := URL.search(line)):
            self.process.kill()
            raise RuntimeError(f"bin/serve did not start: {line}{self.process.stderr.read()}")
        self.url, self.seconds_to_listen = match.group(1), time.perf_counter() - started
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> tuple[int, str]:
        """Sends SIGINT; returns (exit code, what the server wrote to stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, stderr = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return self.process.returncode, stderr

    def __exit__(self, *exc) -> None:
        self.stop()


def resident_mib(pid: int) -> float:
    """The resident memory of process `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
