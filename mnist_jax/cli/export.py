"""bin/export: a run's inference model as an ONNX file (float32 or int8), for bin/predict --model and any
ONNX runtime, checked on MNIST's test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_jax.cli.common import (
    CHECKPOINT_HELP,
    RUN_HELP,
    add_data_arguments,
    load_splits,
    main_guard,
    positive_int,
    quiet_libraries,
)
from mnist_jax.data.mnist import TEST_IMAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export",
        description="Write a run's inference model (EMA parameters and BatchNorm statistics where the run has "
                    "them, its temperature) as an ONNX file taking uint8 (N, 28, 28, 1) pixels and giving "
                    "calibrated probabilities (N, 10), with the class names, that contract and its measured test "
                    "accuracy in its metadata. It runs on onnxruntime without JAX: bin/predict --model FILE.",
        allow_abbrev=False,
    )
    parser.add_argument("--run", type=Path, default=Path("runs/latest"), help=RUN_HELP)
    parser.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="the ONNX file to write")
    parser.add_argument("--int8", action="store_true",
                        help="quantize to int8 (static, calibrated on training images; the logits stay float32)")
    parser.add_argument("--calibration-images", type=positive_int, default=1000, metavar="N",
                        help="with --int8: the first N images of the run's training split calibrate it (default 1000)")
    parser.add_argument("--test-images", type=positive_int, default=TEST_IMAGES, metavar="N",
                        help=f"check the export on the first N test images (default all {TEST_IMAGES:,})")
    add_data_arguments(parser)
    return parser


def report(exported, run_info, size: int, calibration: int | None) -> list[str]:
    """The lines bin/export prints: what was written, then how it compares with its reference."""
    check, info = exported.check, exported.info
    computed = f"; the run computes in {run_info.precision}" if run_info.precision != "float32" else ""
    calibrated = f", calibrated on {calibration:,} training images" if calibration else ""
    lines = [f"exported {run_info.description} to {info.source}: {info.precision}, {size / 1024:,.0f} KiB"
             f"{calibrated}{computed}"]
    reference = "JAX" if info.precision == "float32" else "float32"
    others = f"{reference} {100 * check.reference_accuracy:.2f}%"
    if reference != "JAX":
        others += f", JAX {100 * exported.jax_accuracy:.2f}%"
    points = 100 * (check.accuracy - check.reference_accuracy)
    lines.append(f"test accuracy {100 * check.accuracy:.2f}% on {check.images:,} test images ({others}; "
                 f"{points:+.2f} points)")
    lines.append(f"top-1 as {reference}'s on {check.images - check.differing:,} of {check.images:,} "
                 f"({check.differing:,} differ); largest probability difference {check.max_difference:.1e}")
    return lines


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from mnist_jax.compilation_cache import use_compilation_cache

    use_compilation_cache()
    from mnist_jax.data import dataset
    from mnist_jax.export.exporter import export, write
    from mnist_jax.inference.onnx_model import load_onnx
    from mnist_jax.inference.predict import load_run_model

    run = load_run_model(args.run, args.checkpoint)
    data = load_splits(args, run.run.config.data, log=lambda line: print(line, file=sys.stderr))
    test = dataset.Split(data.test.images[: args.test_images], data.test.labels[: args.test_images])
    calibration = data.train.images[: args.calibration_images] if args.int8 else None
    exported = export(run, args.out, test, calibration)
    size = write(exported.model, args.out)
    load_onnx(args.out)  # the file as bin/predict --model will read it
    print("\n".join(report(exported, run.info, size, None if calibration is None else len(calibration))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
