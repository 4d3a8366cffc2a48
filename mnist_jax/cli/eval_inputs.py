"""bin/eval-inputs: top-1 accuracy on MNIST test digits rendered as users' files, naive vs pipeline."""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_jax.cli.common import add_data_arguments, main_guard, prepare_data, quiet_libraries
from mnist_jax.errors import UserError

FONT_CONDITION = "handwriting-fonts"


def build_parser() -> argparse.ArgumentParser:
    from mnist_jax.renders import CONDITIONS

    parser = argparse.ArgumentParser(
        prog="eval-inputs",
        description="Render MNIST test digits (and digits in handwriting fonts) the way users' image files look, "
                    "and print per condition the top-1 accuracy of the naive input (the whole image resized to "
                    "28x28 greyscale) and of bin/predict's preprocessing, on the same images.",
        allow_abbrev=False,
    )
    parser.add_argument("--run", type=Path, default=Path("runs/latest"), help="run directory (default: runs/latest)")
    parser.add_argument("--checkpoint", default="best", help="best, latest, or a step")
    parser.add_argument("--per-condition", type=int, default=300, metavar="N",
                        help="MNIST test digits rendered per condition (default 300)")
    parser.add_argument("--fonts-per-digit", type=int, default=2, metavar="N",
                        help="renders of each digit 0-9 per installed handwriting font (default 2; 0: none)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help=f"comma-separated subset of: {', '.join(CONDITIONS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--gallery", type=Path, metavar="PNG",
                        help="also write a gallery: one input per condition, what the model saw, its prediction")
    parser.add_argument("--write-files", type=Path, metavar="DIR",
                        help="also write every rendered image as DIR/<condition>/<n>-label<d>.<png|jpg> "
                             "(inputs for trying or timing bin/predict)")
    add_data_arguments(parser)
    return parser


def write_files(directory: Path, name: str, files: list[tuple[bytes, int, str]]) -> None:
    """Writes one condition's renders under directory/name, named by position and label."""
    try:
        (directory / name).mkdir(parents=True, exist_ok=True)
        for index, (blob, label, _) in enumerate(files):
            suffix = "jpg" if blob.startswith(b"\xff\xd8") else "png"
            (directory / name / f"{index:04d}-label{label}.{suffix}").write_bytes(blob)
    except OSError as error:
        raise UserError(f"cannot write the renders into {directory} ({error.strerror})") from None


def naive_input(data: bytes) -> np.ndarray:
    """The baseline: the whole file decoded to greyscale and resized to 28x28 (bilinear), nothing else."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L").resize((28, 28), Image.Resampling.BILINEAR))[:, :, None]


def pipeline_input(data: bytes) -> np.ndarray | None:
    """bin/predict's preprocessing of the file; None when it finds no digit."""
    from mnist_jax.preprocess import load_grayscale, to_mnist

    try:
        return to_mnist(load_grayscale(io.BytesIO(data)))
    except UserError:
        return None


def render_condition(name: str, digits: np.ndarray, labels: np.ndarray, count: int, seed: int):
    """Yields (file bytes, label, title) for `count` test digits, chosen and rendered with their own seeded rng."""
    from mnist_jax.renders import CONDITIONS

    rng = np.random.default_rng([seed, list(CONDITIONS).index(name)])
    for index in rng.choice(len(digits), size=min(count, len(digits)), replace=False):
        yield CONDITIONS[name](digits[index, :, :, 0], rng), int(labels[index]), name


def render_fonts(fonts: list[Path], per_digit: int, seed: int):
    """Yields (file bytes, label, font name) for each font, digit 0-9 and variant."""
    from mnist_jax.renders import render_font_digit

    rng = np.random.default_rng([seed, 1_000])
    for font in fonts:
        for digit in range(10):
            for _ in range(per_digit):
                yield render_font_digit(font, digit, rng), digit, font.stem


@dataclasses.dataclass(frozen=True)
class Scored:
    labels: np.ndarray  # (N,)
    naive: np.ndarray  # (N,) the baseline's predicted digits
    seen: np.ndarray  # (N, 28, 28, 1) what the pipeline gave the model (zeros where it found no digit)
    probabilities: np.ndarray  # (N, 10) the model's output on `seen`
    ours: np.ndarray  # (N,) the pipeline's predicted digits, -1 where it found no digit


def score(state, files: list[tuple[bytes, int, str]], temperature: float = 1.0) -> Scored:
    """Predicts every file through the naive baseline and through the pipeline (probabilities divided by
    `temperature`, as bin/predict does)."""
    from mnist_jax.predict import predict

    naive = predict(state, np.stack([naive_input(blob) for blob, _, _ in files])).argmax(axis=1)
    seen = [pipeline_input(blob) for blob, _, _ in files]
    found = np.array([image is not None for image in seen])
    images = np.stack([image if image is not None else np.zeros((28, 28, 1), np.uint8) for image in seen])
    probabilities = predict(state, images, temperature=temperature)
    return Scored(labels=np.array([label for _, label, _ in files]), naive=naive, seen=images,
                  probabilities=probabilities, ours=np.where(found, probabilities.argmax(axis=1), -1))


def table_row(name: str, count: int, naive_right: int, ours_right: int) -> str:
    return f"| {name} | {count} | {100 * naive_right / count:.1f}% | {100 * ours_right / count:.1f}% |"


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from mnist_jax import checkpoint, dataset, renders

    conditions = args.conditions.split(",")
    unknown = set(conditions) - set(renders.CONDITIONS)
    if unknown:
        raise UserError(f"unknown condition(s) {', '.join(sorted(unknown))}; "
                        f"choose from {', '.join(renders.CONDITIONS)}")
    run = checkpoint.restore(args.run, args.checkpoint)
    data = dataset.load(prepare_data(args))
    fonts = renders.find_fonts() if args.fonts_per_digit > 0 else []
    print(f"fonts: {len(fonts)} handwriting font faces found"
          + (f" ({', '.join(f.stem for f in fonts)})" if fonts else
             f"; for that row install some of: apt-get install {' '.join(renders.HANDWRITING_FONT_PACKAGES)}"),
          file=sys.stderr)

    start, examples, totals = time.perf_counter(), [], np.zeros(3, int)
    print("| condition | images | naive resize | bin/predict pipeline |")
    print("|---|---:|---:|---:|")
    for name in conditions + ([FONT_CONDITION] if fonts else []):
        if name == FONT_CONDITION:
            count, naive_right, ours_right = totals
            print(table_row("**all MNIST renders**", count, naive_right, ours_right))
            files = list(render_fonts(fonts, args.fonts_per_digit, args.seed))
        else:
            files = list(render_condition(name, data.test_images, data.test_labels, args.per_condition, args.seed))
        if args.write_files:
            write_files(args.write_files, name, files)
        scored = score(run.state, files, run.temperature)
        right = [int(np.sum(scored.naive == scored.labels)), int(np.sum(scored.ours == scored.labels))]
        print(table_row(name, len(files), *right), flush=True)
        if name != FONT_CONDITION:
            totals += [len(files), *right]
        if args.gallery:
            picks = range(0, len(files), max(1, len(files) // 8))[:8] if name == FONT_CONDITION else [0]
            examples += [gallery_example(files[i], scored, i) for i in picks]
    if not fonts:
        print(table_row("**all MNIST renders**", *totals))
    print(f"evaluated in {time.perf_counter() - start:.0f} s "
          f"(model: {args.run}, checkpoint step {run.step}; seed {args.seed})", file=sys.stderr)
    if args.gallery:
        from mnist_jax.gallery import save_gallery

        save_gallery(examples, args.gallery)
        print(f"gallery written to {args.gallery}", file=sys.stderr)
    return 0


def gallery_example(file: tuple[bytes, int, str], scored: Scored, index: int):
    """The gallery's view of one scored file; transparent inputs are shown on grey."""
    from mnist_jax.gallery import Example

    blob, label, title = file
    with Image.open(io.BytesIO(blob)) as image:
        rgba = image.convert("RGBA")
    shown = Image.alpha_composite(Image.new("RGBA", rgba.size, (128, 128, 128, 255)), rgba).convert("RGB")
    return Example(title=title[:16], image=np.asarray(shown), seen=scored.seen[index], digit=int(scored.ours[index]),
                   probability=float(scored.probabilities[index].max()), truth=label)


if __name__ == "__main__":
    sys.exit(main())
