"""docs/serve.png: bin/serve's page in headless Chromium, an MNIST test digit drawn on it with pointer strokes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_jax.cli.common import CommandError, add_data_arguments, main_guard, prepare_data, quiet_libraries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve-screenshot", description=__doc__, allow_abbrev=False)
    parser.add_argument("--run", type=Path, default=Path("runs/latest"), help="the run to serve (default runs/latest)")
    parser.add_argument("--digit", type=int, default=0, help="index of the MNIST test digit to draw (default 0)")
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"),
                        help="PNG to write (default docs/serve.png)")
    add_data_arguments(parser)
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from playwright.sync_api import sync_playwright

    from mnist_jax.data import dataset
    from mnist_jax.serving import browser
    from mnist_jax.serving.process import Server
    from mnist_jax.training.checkpoint import restore

    if browser.chromium_path() is None:
        raise CommandError("no Chromium found: install it (apt install chromium) or set CHROMIUM=/path/to/it")
    spec = restore(args.run).config.data.spec  # a missing or damaged run: its one-line error now
    mnist = dataset.load(prepare_data(args, spec=spec, log=lambda line: print(line, file=sys.stderr)), spec=spec)
    if not 0 <= args.digit < len(mnist.test_labels):
        raise CommandError(f"--digit {args.digit} is not a test digit: choose 0-{len(mnist.test_labels) - 1}")
    with Server(args.run) as server, sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        page = chromium.new_page(viewport={"width": 560, "height": 640})
        page.goto(server.url)
        browser.draw_digit(page, mnist.test_images[args.digit])
        state, shown = browser.wait_for_answer(page)
        if state != "done":
            raise CommandError(f"the page answered with an error: {shown}")
        page.screenshot(path=str(args.out), full_page=True)
        chromium.close()
    print(f"wrote {args.out}: test image {args.digit} (a {spec.classes[mnist.test_labels[args.digit]]}), "
          f"read as {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
