"""bin/eval-inputs: top-1 accuracy and calibration on test images of the model's data set rendered as users'
files (MNIST's: also on font digits and real 8x8 scans): a naive resize and a quick MNIST-style preprocessing
beside bin/predict's."""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_jax.cli.common import (
    CommandError,
    add_data_arguments,
    add_model_arguments,
    load_model,
    main_guard,
    prepare_data,
    quiet_libraries,
)
from mnist_jax.data import catalog

FONT_CONDITION = "handwriting-fonts"
SCAN_CONDITION = "sklearn-digits"  # UCI optdigits: 8x8 scans by 43 writers, shipped with scikit-learn
FONT_TARGET = 0.97  # faces reading worse than this are named on stderr


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval-inputs",
        description="Render test images of the model's data set (for digits also handwriting fonts and "
                    "scikit-learn's 8x8 scans) the way users' image files look, and print per condition the "
                    "top-1 accuracy of the naive input (the whole image resized to 28x28 greyscale), of a quick "
                    "MNIST-style preprocessing and of bin/predict's preprocessing on the same images, with the "
                    "calibration error of the last.",
        allow_abbrev=False,
    )
    parser.add_argument("--per-condition", type=int, default=300, metavar="N",
                        help="test images rendered per condition (default 300)")
    parser.add_argument("--fonts-per-digit", type=int, default=2, metavar="N",
                        help="renders of each digit 0-9 per installed handwriting font (default 2; 0: none)")
    parser.add_argument("--scans", type=int, default=-1, metavar="N",
                        help="scikit-learn's 8x8 digit scans to read (needs scikit-learn; "
                             "default -1: all 1,797; 0: none)")
    parser.add_argument("--conditions", metavar="NAME,...",
                        help="comma-separated render conditions (default: all of the model's kind: pen strokes "
                             "for digits and letters, photos and drawings for items; an unknown name lists them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--gallery", type=Path, metavar="PNG",
                        help="also write a gallery: one input per condition, what the model saw, its prediction")
    parser.add_argument("--write-files", type=Path, metavar="DIR",
                        help="also write every rendered image as DIR/<condition>/<n>-label<d>.<png|jpg> "
                             "(inputs for trying or timing bin/predict)")
    add_model_arguments(parser)
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
        raise CommandError(f"cannot write the renders into {directory} ({error.strerror})") from None


def naive_input(data: bytes) -> np.ndarray:
    """The baseline: the whole file decoded to greyscale and resized to 28x28 (bilinear), nothing else."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L").resize((28, 28), Image.Resampling.BILINEAR))[:, :, None]


def quick_input(data: bytes) -> np.ndarray:
    """A second baseline, the usual quick MNIST-style preprocessing: greyscale, inverted when its border
    is light, Otsu's threshold, cropped to the ink, longer side 20 px, centre of mass at (14, 14)."""
    from mnist_jax.inference.preprocess import border, center_by_mass, fit_to_box, otsu_threshold

    with Image.open(io.BytesIO(data)) as image:
        gray = np.asarray(image.convert("L"), np.float32) / 255
    ink = 1.0 - gray if border(gray).mean() > 0.5 else gray
    mask = ink > otsu_threshold(ink)
    if not mask.any():
        return np.zeros((28, 28, 1), np.uint8)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    return np.round(center_by_mass(fit_to_box(crop)) * 255).astype(np.uint8)[:, :, None]


def pipeline_input(data: bytes, framing) -> np.ndarray | None:
    """bin/predict's reading of the file (`read_inputs`, framed by `framing`); None when it finds no ink."""
    from mnist_jax.errors import ImageError
    from mnist_jax.inference.inputs import read_inputs

    try:
        return read_inputs(data, framing=framing)[0]
    except ImageError:
        return None


def render_condition(conditions: dict, name: str, images: np.ndarray, labels: np.ndarray, count: int, seed: int):
    """Yields (file bytes, label, title) for `count` test images, chosen and rendered by `conditions[name]`
    with their own seeded rng."""
    rng = np.random.default_rng([seed, list(conditions).index(name)])
    for index in rng.choice(len(images), size=min(count, len(images)), replace=False):
        yield conditions[name](images[index, :, :, 0], rng), int(labels[index]), name


def render_fonts(fonts: list[Path], per_digit: int, seed: int):
    """Yields (file bytes, label, font name) for each font, digit 0-9 and variant."""
    from mnist_jax.evaluation.renders import render_font_digit

    rng = np.random.default_rng([seed, 1_000])
    for font in fonts:
        for digit in range(10):
            for _ in range(per_digit):
                yield render_font_digit(font, digit, rng), digit, font.stem


def load_scans(count: int):
    """scikit-learn's digits (UCI optdigits, 8x8, values 0-16) as (images (N, 8, 8), labels (N,)), the first
    `count` (-1: all); None when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    end = len(digits.target) if count < 0 else count
    return digits.images[:end], digits.target[:end]


def render_scans(images: np.ndarray, labels: np.ndarray):
    """Yields (file bytes, label, title) for each scan: dark on white, 64 px, alternately nearest and bilinear."""
    from mnist_jax.evaluation.renders import render_scan

    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        yield render_scan(pixels, nearest=index % 2 == 0), int(label), SCAN_CONDITION


@dataclasses.dataclass(frozen=True)
class Scored:
    labels: np.ndarray  # (N,)
    naive: np.ndarray  # (N,) the naive baseline's predicted digits
    quick: np.ndarray  # (N,) the quick MNIST-style baseline's predicted digits
    seen: np.ndarray  # (N, 28, 28, 1) what the pipeline gave the model (zeros where it found no digit)
    probabilities: np.ndarray  # (N, 10) the model's output on `seen`
    ours: np.ndarray  # (N,) the pipeline's predicted digits, -1 where it found no digit

    def row(self, name: str) -> str:
        """The table's line: images, each input's accuracy, and the pipeline's expected calibration error."""
        from mnist_jax.evaluation.metrics import calibration

        count = len(self.labels)
        accuracies = [100 * np.mean(predicted == self.labels) for predicted in (self.naive, self.quick, self.ours)]
        ece = 100 * calibration(self.probabilities, self.labels)["ece"]
        return f"| {name} | {count:,} | " + " | ".join(f"{a:.1f}%" for a in accuracies) + f" | {ece:.1f}% |"


def score(model, files: list[tuple[bytes, int, str]]) -> Scored:
    """Predicts every file through both baselines and through the pipeline with `model` (an
    `inference.model.Model`: calibrated probabilities, as bin/predict gives), framed as its data set's."""
    from mnist_jax.inference.inputs import framing_of

    def digits(inputs: list[np.ndarray]) -> np.ndarray:
        return model.predict(np.stack(inputs)).argmax(axis=1)

    framing = framing_of(model.info.data)
    seen = [pipeline_input(blob, framing) for blob, _, _ in files]
    found = np.array([image is not None for image in seen])
    images = np.stack([image if image is not None else np.zeros((28, 28, 1), np.uint8) for image in seen])
    probabilities = model.predict(images)
    return Scored(labels=np.array([label for _, label, _ in files]),
                  naive=digits([naive_input(blob) for blob, _, _ in files]),
                  quick=digits([quick_input(blob) for blob, _, _ in files]),
                  seen=images, probabilities=probabilities, ours=np.where(found, probabilities.argmax(axis=1), -1))


def concatenate(parts: list[Scored]) -> Scored:
    """One Scored of several conditions' images."""
    return Scored(*(np.concatenate([getattr(part, field.name) for part in parts])
                    for field in dataclasses.fields(Scored)))


def weak_faces(files: list[tuple[bytes, int, str]], scored: Scored, target: float = FONT_TARGET) -> str:
    """The font faces the pipeline reads worse than `target`, with their accuracy, worst first."""
    faces = np.array([title for _, _, title in files])
    accuracy = {face: float(np.mean(scored.ours[faces == face] == scored.labels[faces == face]))
                for face in dict.fromkeys(faces)}
    weak = sorted((a, face) for face, a in accuracy.items() if a < target)
    return ", ".join(f"{face} {100 * a:.0f}%" for a, face in weak) or "none"


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from mnist_jax.data import dataset
    from mnist_jax.evaluation import renders

    model = load_model(args)
    spec = catalog.get(model.info.data)
    known = renders.ITEM_CONDITIONS if spec.framing == catalog.ITEM else renders.CONDITIONS
    conditions = args.conditions.split(",") if args.conditions else list(known)
    unknown = set(conditions) - set(known)
    if unknown:
        raise CommandError(f"unknown condition(s) {', '.join(sorted(unknown))} for a model of {spec.name}; "
                           f"choose from {', '.join(known)}")
    data = dataset.load(prepare_data(args, spec=spec), spec=spec)
    fonts = renders.find_fonts() if args.fonts_per_digit > 0 and spec.is_digits else []
    if spec.is_digits:
        print(f"fonts: {len(fonts)} handwriting font faces found"
              + (f" ({', '.join(f.stem for f in fonts)})" if fonts else
                 f"; for that row install some of: apt-get install {' '.join(renders.HANDWRITING_FONT_PACKAGES)}"),
              file=sys.stderr)
    scans = load_scans(args.scans) if args.scans != 0 and spec.is_digits else None
    if scans is None and args.scans != 0 and spec.is_digits:
        print(f"scans: scikit-learn is not installed; for the {SCAN_CONDITION} row: pip install scikit-learn",
              file=sys.stderr)

    start, examples, renders_scored = time.perf_counter(), [], []
    print("| condition | images | naive resize | quick MNIST-style | bin/predict pipeline | calibration error |")
    print("|---|---:|---:|---:|---:|---:|")

    def evaluate(name: str, files: list[tuple[bytes, int, str]], gallery_picks=(0,)) -> Scored:
        if args.write_files:
            write_files(args.write_files, name, files)
        scored = score(model, files)
        print(scored.row(name), flush=True)
        if args.gallery:
            examples.extend(gallery_example(files[i], scored, i, model.info.classes) for i in gallery_picks)
        return scored

    picks = range(max(1, 8 // len(conditions)))  # the gallery: a row of at least 8 renders
    for name in conditions:
        renders_scored.append(evaluate(name, list(render_condition(
            known, name, data.test_images, data.test_labels, args.per_condition, args.seed)), picks))
    print(concatenate(renders_scored).row(f"**all {spec.title} renders**"))
    if fonts:
        files = list(render_fonts(fonts, args.fonts_per_digit, args.seed))
        scored = evaluate(FONT_CONDITION, files, gallery_picks=range(0, len(files), max(1, len(files) // 8))[:8])
        print(f"font faces under {100 * FONT_TARGET:.0f}%: {weak_faces(files, scored)}", file=sys.stderr)
    if scans is not None:
        evaluate(SCAN_CONDITION, list(render_scans(*scans)), gallery_picks=(0, 1))  # nearest, bilinear
    print(f"evaluated in {time.perf_counter() - start:.0f} s "
          f"(model: {model.info.description}; seed {args.seed})", file=sys.stderr)
    if args.gallery:
        from mnist_jax.evaluation.gallery import save_gallery

        save_gallery(examples, args.gallery)
        print(f"gallery written to {args.gallery}", file=sys.stderr)
    return 0


def gallery_example(file: tuple[bytes, int, str], scored: Scored, index: int, classes: tuple[str, ...]):
    """The gallery's view of one scored file; transparent inputs are shown on grey."""
    from mnist_jax.evaluation.gallery import Example

    blob, label, title = file
    with Image.open(io.BytesIO(blob)) as image:
        rgba = image.convert("RGBA")
    shown = Image.alpha_composite(Image.new("RGBA", rgba.size, (128, 128, 128, 255)), rgba).convert("RGB")
    guess = int(scored.ours[index])
    return Example(title=title[:16], image=np.asarray(shown), seen=scored.seen[index],
                   digit=classes[guess] if guess >= 0 else "none", probability=float(scored.probabilities[index].max()),
                   truth=classes[label])


if __name__ == "__main__":
    sys.exit(main())
