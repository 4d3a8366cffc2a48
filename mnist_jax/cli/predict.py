"""bin/predict: the digit (or the number) in each image file, with its probability."""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from mnist_jax.cli.advice import advice
from mnist_jax.cli.common import CommandError, add_model_arguments, load_model, main_guard
from mnist_jax.errors import ImageError

EXIT_SOME_FAILED = 1
FILES_PER_ROUND = 256  # files read, then predicted and printed, per round: output flows on big directories


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    from mnist_jax.inference.files import MAX_PIXELS

    parser = argparse.ArgumentParser(
        prog="predict",
        description="Predict the digit in each image: PNG, JPEG, BMP, GIF, TIFF or WebP, any size, colour or "
                    "greyscale, dark ink on light paper or the reverse, photos with uneven light included.",
        allow_abbrev=False,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, directories (searched recursively) or quoted glob patterns ('**/*.jpg')")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per file, with the top-k digits")
    output.add_argument("--csv", action="store_true", help="CSV with a header line")
    parser.add_argument("--top-k", type=int, default=3, choices=range(1, 11), metavar="K",
                        help="digits listed per prediction with --json (1-10, default 3)")
    parser.add_argument("--min-confidence", type=probability, default=0.0, metavar="P",
                        help="mark predictions with a probability under P (0-1) as uncertain (default 0: none)")
    parser.add_argument("--number", action="store_true",
                        help="each image holds a row of digits (a number such as 2026): read them left to right")
    parser.add_argument("--show-preprocessed", type=Path, metavar="DIR",
                        help="write the 28x28 images the model saw into DIR (PNG, named after each file)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse images with more pixels than this (default {MAX_PIXELS:,})")
    add_model_arguments(parser)
    return parser


def read_file(path: Path, number: bool, max_pixels: int, framing) -> list | ImageError:
    """Returns the model's inputs (28, 28, 1) in one file (see `read_inputs`), or the ImageError."""
    from mnist_jax.inference.inputs import read_inputs

    try:
        return read_inputs(path, number, max_pixels, framing=framing)
    except ImageError as error:
        return error


def preprocessed_name(path: Path, index: int | None) -> str:
    """The --show-preprocessed file for `path` (its digit `index` with --number): its path joined by _."""
    stem = "_".join(part for part in path.parts if part not in (path.anchor, ".", ".."))
    return f"{stem}.png" if index is None else f"{stem}.digit{index + 1}.png"


def format_result(result, args: argparse.Namespace, width: int) -> str:
    """The output line for one file's `report.Result`, in the format the flags chose."""
    from mnist_jax.inference import report

    if args.json:
        return report.json_row(result, args.number, args.min_confidence)
    if args.csv:
        return report.csv_row(result, args.number, args.min_confidence)
    return report.table_row(result, width, args.number, args.min_confidence)


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    from PIL import Image

    from mnist_jax.inference import report
    from mnist_jax.inference.files import expand_inputs
    from mnist_jax.inference.inputs import framing_of
    from mnist_jax.inference.ranking import top_k

    files, failures = expand_inputs(args.images)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    if not files:
        print(f"{len(failures)} of {len(failures)} files could not be read", file=sys.stderr)
        return EXIT_SOME_FAILED
    if args.show_preprocessed:
        try:
            args.show_preprocessed.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"cannot create {args.show_preprocessed} for --show-preprocessed "
                            f"({error.strerror})") from None
    model = load_model(args)
    classes = model.info.classes
    width = max([len(str(path)) for path in files] + [4])
    if args.csv:
        print(report.csv_line(report.csv_columns(args.number, classes)))
    elif not args.json:
        print(report.table_header(width, args.number, classes))
    failed = len(failures)
    read = partial(read_file, number=args.number, max_pixels=args.max_pixels, framing=framing_of(model.info.data))
    ranks = args.top_k if args.json else 2  # the table and CSV show a runner-up
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(files), FILES_PER_ROUND):
            chunk = files[start : start + FILES_PER_ROUND]
            good = []
            for path, outcome in zip(chunk, pool.map(read, chunk), strict=True):
                if isinstance(outcome, ImageError):
                    print(f"error: {outcome}{advice(outcome)}", file=sys.stderr)
                    failed += 1
                else:
                    good.append((path, outcome))
            if not good:
                continue
            images = np.stack([image for _, digits in good for image in digits])
            rankings = iter(top_k(model.predict(images), ranks))
            for path, digits in good:
                print(format_result(report.Result(path, [next(rankings) for _ in digits], classes), args, width))
                if args.show_preprocessed:
                    for index, image in enumerate(digits):
                        name = preprocessed_name(path, index if args.number else None)
                        Image.fromarray(image[:, :, 0]).save(args.show_preprocessed / name)
            sys.stdout.flush()
    if args.show_preprocessed:
        print(f"the images the model saw are in {args.show_preprocessed}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files) + len(failures)} files could not be read", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
