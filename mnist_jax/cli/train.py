"""bin/train: prepare MNIST, train a preset, report the test accuracy of the best checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mnist_jax import config as config_lib
from mnist_jax.cli.common import (
    EXIT_INTERRUPTED,
    add_data_arguments,
    main_guard,
    prepare_data,
    quiet_libraries,
    use_compilation_cache,
)
from mnist_jax.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Train a CNN on MNIST and report its test accuracy. Every config field of the "
                    "preset can be overridden, e.g. --train.epochs 3 --model.conv_features 16,32.",
        allow_abbrev=False,
    )
    parser.add_argument("--preset", default="default", help=f"named config: {', '.join(config_lib.PRESETS)}")
    parser.add_argument("--config", type=Path, help="JSON file of config fields, applied over the preset")
    parser.add_argument("--workdir", type=Path, help="run directory (default: RUNS_DIR/<preset>-<date>-<time>)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="where new run directories go; RUNS_DIR/latest points at the newest")
    add_data_arguments(parser)
    defaults = config_lib.to_dict(config_lib.PRESETS["default"])
    group = parser.add_argument_group("config fields (default preset's values shown)")
    for name in config_lib.field_names():
        section, _, field = name.partition(".")
        value = defaults[section][field]
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        group.add_argument(f"--{name}", dest=name, metavar="VALUE", help=f"default {shown}")
    return parser


def resolve_config(args: argparse.Namespace) -> config_lib.Config:
    """Returns preset, then --config file, then --section.field flags, validated."""
    config = config_lib.get_preset(args.preset)
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read config file {args.config}: {error}") from None
        config = config_lib.from_dict(values, base=config)
    overrides = {name: value for name, value in vars(args).items() if "." in name and value is not None}
    return config_lib.override(config, overrides)


def choose_workdir(args: argparse.Namespace) -> Path:
    """Returns a new, writable run directory; refuses one that already holds checkpoints."""
    workdir = args.workdir or args.runs_dir / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (workdir / "checkpoints").exists():  # checkpoint.CHECKPOINTS; importing it here would load JAX first
        raise UserError(f"{workdir} already holds a training run; pass a new --workdir")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run directory {workdir} ({error.strerror}); pass another --workdir") from None
    if not os.access(workdir, os.W_OK):
        raise UserError(f"run directory {workdir} is not writable; pass another --workdir")
    return workdir


def point_latest(runs_dir: Path, workdir: Path) -> None:
    """Makes RUNS_DIR/latest a symlink to `workdir` when the run lives in RUNS_DIR."""
    if workdir.absolute().parent != runs_dir.absolute():
        return
    latest = runs_dir / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(workdir.name)


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    workdir = choose_workdir(args)
    quiet_libraries()
    use_compilation_cache()
    from mnist_jax import checkpoint, dataset, fit

    data = dataset.split(dataset.load(prepare_data(args)), config.data)
    print(f"run: {workdir} (preset {args.preset})")
    try:
        summary = fit.train_and_evaluate(config, workdir, data)
    except KeyboardInterrupt:
        saved = workdir / checkpoint.CHECKPOINTS
        if checkpoint.saved_steps(saved):
            print(f"\ninterrupted: the checkpoints already written are intact in {saved}", file=sys.stderr)
        else:
            print("\ninterrupted before the first checkpoint (written after each epoch); nothing was saved",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    point_latest(args.runs_dir, workdir)
    print(f"test accuracy {100 * summary['test_accuracy']:.2f}% (checkpoint of epoch {summary['best_epoch']}, "
          f"validation {100 * summary['best_val_accuracy']:.2f}%) after {summary['total_seconds']:.0f} s")
    print(f"run written to {workdir}: config.json metrics.jsonl accuracy.png loss.png checkpoints/ summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
