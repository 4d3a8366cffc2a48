"""bin/bench: time to a target accuracy, training/evaluation throughput, predict latency and memory."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mnist_jax import config as config_lib
from mnist_jax.cli.common import (
    add_config_arguments,
    add_data_arguments,
    config_overrides,
    main_guard,
    positive_int,
    positive_ints,
    prepare_data,
    print_results,
    quiet_libraries,
    resolve_config,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Measure a preset on this machine: the whole bin/train process and its time to the target "
                    "accuracy, train_step images/s per batch size (compile separate), evaluation images/s, "
                    "bin/predict cold start for one image, peak memory. Prints a table and JSON.",
        allow_abbrev=False,
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--batch-sizes", type=positive_ints, default=(64, 128, 256), metavar="N,N,...",
                        help="train_step throughput batch sizes (default 64,128,256)")
    parser.add_argument("--steps", type=positive_int, default=40, help="train steps per throughput timing (default 40)")
    parser.add_argument("--target", type=float, default=0.99, help="accuracy to time (default 0.99)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    add_data_arguments(parser)
    add_config_arguments(parser, default_preset="fast")
    return parser


def bench_config(args: argparse.Namespace) -> tuple[config_lib.Config, dict[str, str]]:
    """Returns the validated config to measure (the fast preset unless --preset or --config says otherwise)
    and the bin/train flags that give it: --preset, --config and the --section.field flags."""
    if args.preset is None and args.config is None:
        args.preset = "fast"
    given = {"preset": args.preset, "config": args.config}
    flags = {name: str(value) for name, value in given.items() if value is not None}
    return resolve_config(args), {**flags, **config_overrides(args)}


def train_flags(flags: dict[str, str]) -> str:
    """The bin/train command line of `flags`, as a user would type it."""
    return " ".join(f"--{name} {value}" for name, value in flags.items())


def measure(args: argparse.Namespace, config: config_lib.Config, overrides: dict[str, str], log=print) -> dict:
    """Runs every measurement; returns {"machine", "preset", "config", ..., "figures": [...]}."""
    from mnist_jax.data import dataset
    from mnist_jax.evaluation import timing

    measured_on = timing.machine()  # its load average is the one before the measurements
    data_dir = prepare_data(args, spec=config.data.spec)
    data = dataset.split(dataset.load(data_dir, spec=config.data.spec), config.data)
    percent = f"{100 * args.target:g}%"
    figures = []

    def add(key: str, label: str, unit: str, summary: dict) -> None:
        figures.append({"key": key, "figure": label, "unit": unit, **summary})

    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch:
        scratch = Path(scratch)
        cache = scratch / "xla-cache"  # empty for the first run, warm for the repeats
        log(f"bench: bin/train {train_flags(overrides)}, 1 run with an empty compilation cache + {args.repeats}")
        cold = timing.run_train(overrides, data_dir, scratch / "run-cold", cache)
        runs = [timing.run_train(overrides, data_dir, scratch / f"run-{i}", cache)
                for i in range(args.repeats)]
        reached = [timing.time_to_target(run, args.target) for run in runs]
        add("process_seconds", f"whole bin/train {train_flags(overrides)}", "s",
            timing.spread([run.seconds for run in runs]))
        add("process_seconds_cold_cache", "  the same, empty compilation cache", "s", timing.spread([cold.seconds]))
        add("val_target_from_start_seconds", f"{percent} validation, from process start", "s",
            timing.spread([r["val_from_start"] for r in reached]))
        add("val_target_training_seconds", f"{percent} validation, training time", "s",
            timing.spread([r["val_training"] for r in reached]))
        add("test_target_from_start_seconds", f"{percent} test, from process start", "s",
            timing.spread([r["test_from_start"] for r in reached]))
        add("test_target_training_seconds", f"{percent} test, training time", "s",
            timing.spread([r["test_training"] for r in reached]))
        add("test_accuracy_percent", "test accuracy", "%",
            timing.spread([100 * run.summary["test_accuracy"] for run in runs]))
        add("peak_rss_mib", "peak memory of bin/train (RSS)", "MiB",
            timing.spread([run.peak_rss_bytes / 2**20 for run in [cold, *runs]]))
        log("bench: bin/predict cold starts")
        image = timing.digit_image(data.test, scratch / "digit.png")
        add("predict_cold_start_seconds", "bin/predict, one image, cold start", "s",
            timing.predict_latency(image, runs[0].workdir, cache, args.repeats))

    for batch_size in args.batch_sizes:
        log(f"bench: train_step at batch {batch_size}")
        result = timing.train_throughput(config, data.train, batch_size, args.steps, args.repeats)
        add(f"train_images_per_second_batch_{batch_size}", f"train_step, batch {batch_size}", "img/s",
            result["images_per_second"])
        add(f"compile_seconds_batch_{batch_size}", f"  its compile, batch {batch_size}", "s",
            timing.spread([result["compile_seconds"]]))
    log("bench: evaluation")
    add("eval_images_per_second", f"evaluate, batch {config.train.eval_batch_size}", "img/s",
        timing.eval_throughput(config, data.test, args.repeats))
    measured_on["load_average_1min_end"] = timing.machine()["load_average_1min"]
    return {"machine": measured_on, "preset": args.preset, "overrides": overrides, "target": args.target,
            "repeats": args.repeats, "config": config_lib.to_dict(config), "figures": figures}


def format_table(results: dict) -> str:
    """Returns the figures as an aligned text table headed by the machine."""
    m = results["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']} ({m['device']}); jax {m['jax']}, "
             f"flax {m['flax']}, optax {m['optax']}; 1-min load average {m['load_average_1min']:.2f} before, "
             f"{m['load_average_1min_end']:.2f} after",
             f"{'figure':<44} {'median':>10} {'min':>10} {'max':>10}  unit   runs"]
    for f in results["figures"]:
        middle, low, high = (_show(f[key]) for key in ("median", "min", "max"))
        lines.append(f"{f['figure']:<44} {middle:>10} {low:>10} {high:>10}  {f['unit']:<6} {len(f['values'])}")
    return "\n".join(lines)


def _show(value: float | None) -> str:
    if value is None:
        return "not reached"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config, overrides = bench_config(args)
    quiet_libraries()
    results = measure(args, config, overrides, log=lambda line: print(line, file=sys.stderr))
    print_results(format_table(results), results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
