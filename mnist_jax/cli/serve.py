"""bin/serve: the draw-a-digit page and the JSON API (see `serving.app`) for a trained run, until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from pathlib import Path

from mnist_jax.cli.common import CommandError, main_guard, quiet_libraries
from mnist_jax.compilation_cache import use_compilation_cache

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    from mnist_jax.inference.files import MAX_PIXELS
    from mnist_jax.serving.app import MAX_BYTES

    parser = argparse.ArgumentParser(prog="serve", allow_abbrev=False,
                                     description="Serve a page to draw digits on and a JSON API "
                                                 "(POST /api/predict, GET /api/info) for a trained run.")
    parser.add_argument("--run", type=Path, default=Path("runs/latest"),
                        help="run directory, its checkpoints/ directory, or one step's directory "
                             "(default: runs/latest)")
    parser.add_argument("--checkpoint", default="best", help="best (by validation accuracy), latest, or a step")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                             "the network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, metavar="N",
                        help=f"refuse request bodies larger than this (default {MAX_BYTES:,})")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse images with more pixels than this (default {MAX_PIXELS:,})")
    parser.add_argument("--queue", type=int, default=64, metavar="N",
                        help="requests handled at once; more get 503 (default 64)")
    return parser


def listen(host: str, port: int) -> socket.socket:
    """Returns a socket listening on host:port; raises CommandError when it cannot."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, protocol)  # protocol TCP: asyncio then turns Nagle off (TCP_NODELAY)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        raise CommandError(f"cannot listen on {host}:{port} ({error.strerror or error}); "
                           "choose another --port or --host") from None
    return sock


def stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the server as Ctrl-C does: cleanly, with exit status 0


def run_info(run, path: Path) -> dict:
    """/api/info's body for a restored checkpoint `run` of the run at `path`."""
    from mnist_jax import config as config_lib
    from mnist_jax.data.mnist import NUM_CLASSES
    from mnist_jax.run_dir import RunDir

    summary = RunDir(run.directory.parent).read_summary() or {}
    return {"run": str(path), "step": run.step, "classes": [str(c) for c in range(NUM_CLASSES)],
            "test_accuracy": summary.get("test_accuracy"), "temperature": run.temperature,
            "config": config_lib.to_dict(run.config)}


@main_guard
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    for name in ("max_bytes", "max_pixels", "queue"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: the page and the API are open to the network", file=sys.stderr)
    sock = listen(args.host, args.port)  # first: a busy port is reported before the model loads
    quiet_libraries()
    use_compilation_cache()
    import uvicorn

    from mnist_jax.inference.predict import predict
    from mnist_jax.serving.app import Limits, create_app
    from mnist_jax.serving.batching import PredictQueue
    from mnist_jax.training import checkpoint

    run = checkpoint.restore(args.run, args.checkpoint)
    queue = PredictQueue(lambda images, size: predict(run.state, images, size, run.temperature), capacity=args.queue)
    queue.warm_up()
    app = create_app(queue, run_info(run, args.run), Limits(args.max_bytes, args.max_pixels))
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    settings = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(settings)

    async def serve() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not (server.started or serving.done()):  # from here on, uvicorn handles Ctrl-C and SIGTERM
            await asyncio.sleep(0.01)
        print(f"serving {args.run} (step {run.step}) at {url} after {time.perf_counter() - started:.1f} s; "
              "Ctrl-C stops it", flush=True)
        await serving

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        with asyncio.Runner(loop_factory=settings.get_loop_factory()) as runner:  # uvloop where installed
            runner.run(serve())
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C (and SIGTERM), then raises the signal again
        pass
    finally:
        queue.close()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
