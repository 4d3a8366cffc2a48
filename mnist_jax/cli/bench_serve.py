"""bin/bench-serve: bin/serve under load on this machine: requests/s and latency per number of concurrent
clients, the server's memory before and after, and the time from starting bin/serve to its first answer."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mnist_jax.cli.common import (
    CommandError,
    add_data_arguments,
    main_guard,
    positive_ints,
    prepare_data,
    quiet_libraries,
)

UPLOADS = 200  # MNIST test digits, posted as PNG files in turn
INFO_REQUESTS = 500


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench-serve", allow_abbrev=False, description=__doc__.split(":", 1)[1])
    parser.add_argument("--run", type=Path, default=Path("runs/latest"), help="the run to serve (default runs/latest)")
    parser.add_argument("--clients", type=positive_ints, default=(1, 8, 32), metavar="N,N,...",
                        help="concurrent clients, one load run each (default 1,8,32)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load run (default 20)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    add_data_arguments(parser)
    return parser


def measure(args: argparse.Namespace, data_dir: Path, spec, log=print) -> dict:
    """Starts bin/serve on the run, loads it at each client count; returns the figures."""
    import urllib.request

    import numpy as np

    from mnist_jax.compilation_cache import COMPILATION_CACHE_VARIABLE
    from mnist_jax.data import dataset
    from mnist_jax.evaluation.timing import machine
    from mnist_jax.serving.load import digit_uploads, run_load
    from mnist_jax.serving.process import Server, resident_mib

    mnist = dataset.load(data_dir, spec=spec)
    uploads = digit_uploads(mnist.test_images[:UPLOADS], mnist.test_labels[:UPLOADS])

    def first_answer(server: Server, started: float) -> float:
        request = urllib.request.Request(server.url + "api/predict", uploads[0].body,
                                         {"Content-Type": uploads[0].content_type})
        urllib.request.urlopen(request, timeout=60).read()
        return time.perf_counter() - started

    started = time.perf_counter()
    with Server(args.run, env={COMPILATION_CACHE_VARIABLE: "off"}) as server:
        cold = first_answer(server, started)
    started = time.perf_counter()
    with Server(args.run) as server:
        warm = first_answer(server, started)
        rss_before = resident_mib(server.pid)
        log(f"bin/serve answered its first request {cold:.2f} s after it started, {warm:.2f} s with its compiled "
            f"programs cached; {rss_before:.0f} MiB")
        info_ms = 1000 * info_latency(server.url)
        log(f"GET /api/info, the web stack alone: {info_ms:.2f} ms per request (median of {INFO_REQUESTS})")
        log(HEADER)
        loads = []
        for clients in args.clients:
            result = run_load(server.url, uploads, clients, args.seconds)
            loads.append({"clients": clients, "requests": len(result.latencies),
                          "requests_per_second": result.requests_per_second,
                          "p50_ms": 1000 * result.percentile(50), "p99_ms": 1000 * result.percentile(99),
                          "errors": len(result.errors), "wrong": result.wrong,
                          "accuracy": 1 - result.wrong / max(1, len(result.latencies))})
            log(format_row(loads[-1]))
        rss_after = resident_mib(server.pid)
    return {"machine": {k: v for k, v in machine().items() if k not in ("device", "device_count")},
            "run": str(args.run), "seconds_per_load": args.seconds, "uploads": UPLOADS,
            "seconds_to_listen": server.seconds_to_listen, "seconds_to_first_answer": cold,
            "seconds_to_first_answer_cached": warm,
            "info_ms": info_ms, "rss_mib_before": rss_before, "rss_mib_after": rss_after, "loads": loads,
            "median_requests_per_second": float(np.median([load["requests_per_second"] for load in loads]))}


def info_latency(url: str) -> float:
    """The median seconds of INFO_REQUESTS GET /api/info in turn over one connection: the framework's own cost."""
    import http.client
    import statistics
    import urllib.parse

    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    seconds = []
    for _ in range(INFO_REQUESTS):
        sent = time.perf_counter()
        connection.request("GET", "/api/info")
        connection.getresponse().read()
        seconds.append(time.perf_counter() - sent)
    connection.close()
    return statistics.median(seconds)


HEADER = f"{'clients':>7}  {'requests':>8}  {'req/s':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'errors':>6}  {'correct':>7}"


def format_row(load: dict) -> str:
    return (f"{load['clients']:>7}  {load['requests']:>8}  {load['requests_per_second']:>7.1f}  "
            f"{load['p50_ms']:>7.1f}  {load['p99_ms']:>7.1f}  {load['errors']:>6}  {100 * load['accuracy']:>6.1f}%")


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds <= 0:
        raise CommandError("--seconds must be positive")
    quiet_libraries()
    from mnist_jax.training.checkpoint import restore

    spec = restore(args.run).config.data.spec  # a missing or damaged run: its one-line error now, not the server's
    data_dir = prepare_data(args, spec=spec, log=lambda line: print(line, file=sys.stderr))
    results = measure(args, data_dir, spec)
    machine = results["machine"]
    print(f"server memory {results['rss_mib_before']:.0f} MiB before the load, {results['rss_mib_after']:.0f} MiB "
          f"after; {machine['cpu']}, {machine['cores']} cores; clients and server share them")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
