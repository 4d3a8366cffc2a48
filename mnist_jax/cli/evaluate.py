"""bin/evaluate: accuracy, per-class accuracy, confusions, mistakes and calibration of one run or an ensemble."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnist_jax.cli.common import CommandError, add_data_arguments, load_splits, main_guard, quiet_libraries
from mnist_jax.writable import make_writable

FIGURES = {"confusion": "confusion.png", "misclassified": "misclassified.png", "calibration": "calibration.png"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Evaluate a trained run, or several together as an ensemble (mean of their probabilities), "
                    "on the test split of the data set they trained on: overall and per-class accuracy, a "
                    "confusion matrix, the misclassified images and a reliability diagram.",
        allow_abbrev=False,
    )
    parser.add_argument("--run", type=Path, action="append", dest="runs", metavar="RUN",
                        help="run directory, its checkpoints/ directory or one step's directory; repeat it for "
                             "an ensemble (default: runs/latest)")
    parser.add_argument("--checkpoint", default="best",
                        help="best (by validation accuracy, the default), latest, or a step")
    parser.add_argument("--split", default="test", choices=("test", "validation"),
                        help="test (default) or the validation images the runs held out")
    parser.add_argument("--tta", type=int, default=1, metavar="N",
                        help="test-time augmentation: average over the image and N-1 small random distortions "
                             "of it (fixed key; default 1: off)")
    parser.add_argument("--uncalibrated", action="store_true",
                        help="use each run's raw softmax instead of dividing its logits by the temperature fitted "
                             "on validation when the checkpoint was saved")
    parser.add_argument("--out", type=Path,
                        help="directory for summary.json and the figures (default: RUN/evaluation/<split>..., "
                             "RUN being the first run)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_data_arguments(parser)
    return parser


def default_out(run_dir: Path, split: str, runs: int, views: int, uncalibrated: bool = False) -> Path:
    """Returns RUN/evaluation/<split>[-ensembleK][-ttaN][-uncalibrated]: different evaluations never overwrite
    each other."""
    name = (split + (f"-ensemble{runs}" if runs > 1 else "") + (f"-tta{views}" if views > 1 else "")
            + ("-uncalibrated" if uncalibrated else ""))
    return run_dir / "evaluation" / name


def make_out_dir(path: Path) -> Path:
    """Creates `path` if needed; raises CommandError when it cannot be created or written."""
    try:
        make_writable(path)
    except OSError as error:
        raise CommandError(f"cannot write output directory {path} ({error.strerror}); pass another --out") from None
    return path


def labelled_split(args: argparse.Namespace, restored: list) -> tuple:
    """Returns (images, labels) of the chosen split; validation needs every run to hold out the same images."""

    names = {run.config.data.name for run in restored}
    if len(names) > 1:
        raise CommandError(f"the runs were trained on different data sets ({', '.join(sorted(names))}); "
                           "an ensemble needs runs of one data set")
    sizes = {run.config.data.validation_size for run in restored}
    if args.split == "validation" and len(sizes) > 1:
        raise CommandError(f"the runs held out different validation images (validation_size "
                        f"{', '.join(map(str, sorted(sizes)))}); evaluate them on --split test or one at a time")
    # Data lines go to stderr: stdout holds only the results.
    splits = load_splits(args, restored[0].config.data, log=lambda line: print(line, file=sys.stderr))
    return getattr(splits, args.split)


def per_class_lines(classes: tuple[str, ...], accuracy: list[float], noun: str, per_line: int = 10) -> list[str]:
    """The per-class accuracy table, `per_line` classes a line, each column as wide as the longest name."""
    width = max(8, 2 + max(map(len, classes)))
    lines = []
    for start in range(0, len(classes), per_line):
        names, values = classes[start:start + per_line], accuracy[start:start + per_line]
        lines.append(f"{noun:<10}" + "".join(f"{name:>{width}}" for name in names))
        lines.append(f"{'accuracy':<10}" + "".join(f"{100 * a:{width - 1}.2f}%" for a in values))
    return lines


def print_summary(summary: dict) -> None:
    runs = summary["runs"]
    what = runs[0]["run"] if len(runs) == 1 else f"an ensemble of {len(runs)} runs"
    tta = f", test-time augmentation over {summary['tta']} views" if summary["tta"] > 1 else ""
    print(f"{what} on the {summary['split']} split ({summary['images']:,} images{tta})")
    for run in runs:
        print(f"  {run['run']}: checkpoint step {run['step']}, temperature {run['temperature']:.3f}")
    print(f"accuracy {100 * summary['accuracy']:.2f}% ({summary['errors']} errors), loss {summary['loss']:.4f}, "
          f"expected calibration error {100 * summary['expected_calibration_error']:.2f}%")
    print("\n".join(per_class_lines(tuple(summary["classes"]), summary["per_class_accuracy"], summary["noun"])))
    print(f"written to {summary['out']}: summary.json {' '.join(FIGURES.values())}")


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tta < 1:
        parser.error(f"argument --tta: must be at least 1, got {args.tta}")
    runs = args.runs or [Path("runs/latest")]
    quiet_libraries()
    from mnist_jax.evaluation import metrics, plots
    from mnist_jax.training import checkpoint

    restored = [checkpoint.restore(run, args.checkpoint) for run in runs]
    out = make_out_dir(args.out or default_out(restored[0].directory.parent, args.split, len(runs), args.tta,
                                               args.uncalibrated))
    images, labels = labelled_split(args, restored)

    temperatures = [1.0 if args.uncalibrated else run.temperature for run in restored]
    probabilities = metrics.ensemble_probabilities([run.state for run in restored], images, args.tta, temperatures)
    spec = restored[0].config.data.spec
    noun = "digit" if spec.is_digits else "class"
    summary = {
        "data": spec.name, "classes": list(spec.classes), "noun": noun, "split": args.split, "tta": args.tta,
        "runs": [{"run": str(path), "step": run.step, "temperature": temperature}
                 for path, run, temperature in zip(runs, restored, temperatures, strict=True)],
        **metrics.summarize(probabilities, labels),
        "out": str(out),
    }
    name = restored[0].directory.parent.resolve().name if len(runs) == 1 else f"ensemble of {len(runs)} runs"
    title = f"{name}, {args.split} split" + (f", {args.tta} test-time views" if args.tta > 1 else "")
    plots.plot_confusion(metrics.confusion_matrix(labels, probabilities.argmax(axis=1), spec.num_classes),
                         out / FIGURES["confusion"], f"{title}: accuracy {100 * summary['accuracy']:.2f}%",
                         spec.classes, noun)
    plots.plot_misclassified(images, labels, probabilities, out / FIGURES["misclassified"], spec.classes)
    plots.plot_calibration(metrics.calibration(probabilities, labels), out / FIGURES["calibration"], title)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
