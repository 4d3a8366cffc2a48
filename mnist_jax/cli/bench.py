"""bin/bench: time to a target accuracy, training/evaluation throughput, predict latency and memory."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mnist_jax import config as config_lib
from mnist_jax.cli.common import (
    CommandError,
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
    parser.add_argument("--compare", metavar="COMMIT",
                        help="also run the same bin/train at COMMIT (a git worktree of this checkout), alternating "
                             "with this one, and print both whole processes and their ratio side by side")
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
    from mnist_jax.training import parallel

    measured_on = timing.machine()  # its load average is the one before the measurements
    data_dir = prepare_data(args, spec=config.data.spec)
    data = dataset.split(dataset.load(data_dir, spec=config.data.spec), config.data)
    percent = f"{100 * args.target:g}%"
    figures = []

    def add(key: str, label: str, unit: str, summary: dict) -> None:
        figures.append({"key": key, "figure": label, "unit": unit, **summary})

    comparison = None
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch:
        scratch = Path(scratch)
        cache = scratch / "xla-cache"  # empty for the first run, warm for the repeats
        if args.compare:
            cold, runs, comparison = side_by_side(args, config, overrides, data_dir, scratch, cache, log)
        else:
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
        add("cores_busy", "  its CPU time over wall time (cores busy)", "cores",
            timing.spread([run.cpu_seconds / run.seconds for run in runs]))
        log("bench: bin/predict cold starts")
        image = timing.digit_image(data.test, scratch / "digit.png")
        add("predict_cold_start_seconds", "bin/predict, one image, cold start", "s",
            timing.predict_latency(image, runs[0].workdir, cache, args.repeats))

    first_core = str(min(parallel.usable_cores_set()))
    for batch_size in args.batch_sizes:
        log(f"bench: train_step at batch {batch_size}, on every core and on core {first_core} alone")
        every = timing.throughput_process(config, data_dir, batch_size, args.steps, args.repeats)
        alone = timing.throughput_process(config, data_dir, batch_size, args.steps, args.repeats, cores=first_core)
        bound = timing.throughput_process(config, data_dir, batch_size, args.steps, args.repeats, devices_alone=True)
        cores, devices = parallel.usable_cores(), every["devices"]
        add(f"train_images_per_second_batch_{batch_size}",
            f"train_step, batch {batch_size}, {cores} cores ({devices} devices)", "img/s", every["images_per_second"])
        add(f"train_images_per_second_batch_{batch_size}_one_core", "  the same on 1 core", "img/s",
            alone["images_per_second"])
        add(f"core_scaling_batch_{batch_size}", f"  {cores} cores over 1", "x",
            timing.spread([every["images_per_second"]["median"] / alone["images_per_second"]["median"]]))
        add(f"devices_alone_images_per_second_batch_{batch_size}",
            f"  {devices} devices each alone, no collective", "img/s", bound["images_per_second"])
        add(f"devices_alone_scaling_batch_{batch_size}", "  the bound over 1 core", "x",
            timing.spread([bound["images_per_second"]["median"] / alone["images_per_second"]["median"]]))
        add(f"compile_seconds_batch_{batch_size}", f"  its compile, batch {batch_size}", "s",
            timing.spread([every["compile_seconds"]]))
    log("bench: evaluation")
    add("eval_images_per_second", f"evaluate, batch {config.train.eval_batch_size}", "img/s",
        timing.eval_throughput(config, data.test, args.repeats))
    measured_on["load_average_1min_end"] = timing.machine()["load_average_1min"]
    return {"machine": measured_on, "preset": args.preset, "overrides": overrides, "target": args.target,
            "repeats": args.repeats, "config": config_lib.to_dict(config), "figures": figures,
            "comparison": comparison}


CHECKOUT = Path(__file__).resolve().parents[2]  # the git checkout this mnist_jax runs from, when it is one


def git(*words: str) -> subprocess.CompletedProcess:
    """Runs `git WORDS` in this checkout; returns the finished process (text output)."""
    return subprocess.run(["git", "-C", str(CHECKOUT), *words], capture_output=True, text=True)


@contextlib.contextmanager
def worktree(commit: str, path: Path):
    """Checks `commit` of this checkout out at `path` (a detached git worktree) for the block; yields
    (path, its full hash). Raises CommandError when this is no git checkout or it has no such commit."""
    found = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if found.returncode != 0:
        raise CommandError(f"--compare {commit}: no such commit in {CHECKOUT} (a git checkout is needed)")
    full = found.stdout.strip()
    added = git("worktree", "add", "--detach", str(path), full)
    if added.returncode != 0:
        raise CommandError(f"--compare {commit}: git cannot check it out ({added.stderr.strip()})")
    try:
        yield path, full
    finally:
        git("worktree", "remove", "--force", str(path))


def side_by_side(args: argparse.Namespace, config: config_lib.Config, overrides: dict[str, str], data_dir: Path,
                 scratch: Path, cache: Path, log) -> tuple:
    """Runs bin/train of `overrides` at --compare's commit and in this checkout, alternately: for each a cold
    run that fills its own compilation cache (`cache` for this checkout's) and decoded-data cache, then
    --repeats warm runs. Returns this checkout's (cold run, warm runs) and the comparison: the two commits,
    each side's medians ("compared", "this") and this one's over the other's."""
    from mnist_jax.evaluation import timing
    from mnist_jax.evaluation.figures import spread

    this = git("rev-parse", "HEAD").stdout.strip() or "this checkout"
    with worktree(args.compare, scratch / "compared") as (other, commit):
        # Keyed by role, not by commit: comparing a commit with itself keeps two sides.
        sources, labels = {"compared": other, "this": None}, {"compared": commit, "this": this}
        caches = {"compared": scratch / "xla-compared", "this": cache}
        for name in sources:  # each its own copy: the decoded cache's format is each version's own
            shutil.copytree(data_dir / config.data.spec.relative_dir, scratch / f"data-{name}" /
                            config.data.spec.relative_dir)
        runs = {name: [] for name in sources}
        colds = {}
        for name, source in sources.items():
            log(f"bench: bin/train {train_flags(overrides)} at {labels[name][:12]}, empty compilation cache")
            colds[name] = timing.run_train(overrides, scratch / f"data-{name}", scratch / f"{name}-cold",
                                           caches[name], source)
        for index in range(args.repeats):
            for name, source in sources.items():
                log(f"bench: run {index + 1} of {args.repeats} at {labels[name][:12]}")
                runs[name].append(timing.run_train(overrides, scratch / f"data-{name}", scratch / f"{name}-{index}",
                                                   caches[name], source))
    measures = {"process_seconds": lambda run: run.seconds,
                "train_seconds": lambda run: run.summary["train_seconds"],
                "test_accuracy_percent": lambda run: 100 * run.summary["test_accuracy"],
                "cores_busy": lambda run: run.cpu_seconds / run.seconds}
    sides = {name: {key: spread([measure(run) for run in runs[name]]) for key, measure in measures.items()}
             for name in sources}
    ratios = {key: sides["this"][key]["median"] / sides["compared"][key]["median"] for key in measures}
    comparison = {"commits": [commit, this], "sides": sides, "ratios": ratios}
    return colds["this"], runs["this"], comparison


COMPARED = {"process_seconds": ("whole bin/train process", "s"), "train_seconds": ("its training", "s"),
            "test_accuracy_percent": ("test accuracy", "%"), "cores_busy": ("CPU time over wall time", "cores")}


def format_comparison(comparison: dict, repeats: int) -> str:
    """The side-by-side table: each commit's medians and the ratio of this checkout's to the other's."""
    old, new = comparison["commits"]
    lines = [f"side by side, medians of {repeats} alternating runs each, warm caches:",
             f"{'figure':<28} {old[:12]:>12} {new[:12]:>12} {'ratio':>7}  unit"]
    for key, (label, unit) in COMPARED.items():
        a, b = (comparison["sides"][name][key]["median"] for name in ("compared", "this"))
        lines.append(f"{label:<28} {_show(a):>12} {_show(b):>12} {comparison['ratios'][key]:>7.3f}  {unit}")
    return "\n".join(lines)


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
    table = format_table(results)
    if results["comparison"]:
        table += "\n\n" + format_comparison(results["comparison"], args.repeats)
    print_results(table, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
