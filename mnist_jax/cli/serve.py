"""bin/serve: the draw-a-digit page and the JSON API (see `serving.app`) for a trained run or an exported
ONNX model (no JAX), until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time

from mnist_jax.cli.common import CommandError, add_model_arguments, load_model, main_guard, positive_int

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def port(text: str) -> int:
    """argparse's type for --port: 0-65535 (the socket layer would wrap 70000 round to 4464)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from mnist_jax.inference.files import MAX_PIXELS
    from mnist_jax.serving.app import MAX_BYTES

    parser = argparse.ArgumentParser(prog="serve", allow_abbrev=False,
                                     description="Serve a page to draw digits on and a JSON API "
                                                 "(POST /api/predict, GET /api/info) for a trained run.")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                             "the network)")
    parser.add_argument("--port", type=port, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-bytes", type=positive_int, default=MAX_BYTES, metavar="N",
                        help=f"refuse request bodies larger than this (default {MAX_BYTES:,})")
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse images with more pixels than this (default {MAX_PIXELS:,})")
    parser.add_argument("--queue", type=positive_int, default=64, metavar="N",
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


def model_info(model) -> dict:
    """/api/info's body for an `inference.model.Model`: the run (or ONNX file), its config when it is a run."""
    from mnist_jax import config as config_lib

    info = model.info
    run = getattr(model, "run", None)  # a checkpoint restored for JAX (`RunModel`); an ONNX file has none
    return {"run": str(info.source), "runtime": info.runtime, "precision": info.precision, "step": info.step,
            "data": info.data, "classes": list(info.classes), "test_accuracy": info.test_accuracy,
            "temperature": info.temperature,
            "config": config_lib.to_dict(run.config) if run is not None else None}


@main_guard
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: the page and the API are open to the network", file=sys.stderr)
    sock = listen(args.host, args.port)  # first: a busy port is reported before the model loads
    model = load_model(args)
    import uvicorn

    from mnist_jax.serving.app import Limits, create_app
    from mnist_jax.serving.batching import PredictQueue

    queue = PredictQueue(model.predict, capacity=args.queue)
    queue.warm_up()
    app = create_app(queue, model_info(model), Limits(args.max_bytes, args.max_pixels))
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    settings = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(settings)

    async def serve() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not (server.started or serving.done()):  # from here on, uvicorn handles Ctrl-C and SIGTERM
            await asyncio.sleep(0.01)
        print(f"serving {model.info.description} at {url} after {time.perf_counter() - started:.1f} s; "
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
