"""bin/predict: the digit in each image file, with its probability."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnist_jax.cli.common import main_guard, quiet_libraries, use_compilation_cache
from mnist_jax.errors import UserError

EXIT_SOME_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict",
        description="Predict the digit in each image (PNG, JPEG and other formats Pillow reads; any size, "
                    "colour or greyscale, dark ink on light paper or the reverse).",
        allow_abbrev=False,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--run", type=Path, default=Path("runs/latest"),
                        help="run directory, its checkpoints/ directory, or one step's directory "
                             "(default: runs/latest, the newest bin/train run)")
    parser.add_argument("--checkpoint", default="best", help="best (by validation accuracy), latest, or a step")
    parser.add_argument("--json", action="store_true", help="one JSON object per file, with the top-k digits")
    parser.add_argument("--top-k", type=int, default=3, choices=range(1, 11), metavar="K",
                        help="digits listed per file with --json (1-10, default 3)")
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    use_compilation_cache()
    import numpy as np

    from mnist_jax import checkpoint
    from mnist_jax.predict import predict, top_k
    from mnist_jax.preprocess import preprocess_file

    run = checkpoint.restore(args.run, args.checkpoint)
    files, images, failed = [], [], 0
    for path in args.images:
        try:
            images.append(preprocess_file(path))
            files.append(path)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    if images:
        ranked = top_k(predict(run.state, np.stack(images)), args.top_k)
        width = max(len(str(path)) for path in files)
        if not args.json:
            print(f"{'file':<{width}}  digit  probability")
        for path, best in zip(files, ranked, strict=True):
            digit, probability = best[0]
            if args.json:
                print(json.dumps({"file": str(path), "digit": digit, "probability": round(probability, 6),
                                  "top_k": [{"digit": d, "probability": round(p, 6)} for d, p in best]}))
            else:
                print(f"{str(path):<{width}}  {digit:>5}  {100 * probability:10.2f}%")
    if failed:
        print(f"{failed} of {len(args.images)} files could not be read", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
