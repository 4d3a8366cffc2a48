"""bin/train: prepare MNIST, train a preset (or resume a run), report the test accuracy of the best checkpoint."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from mnist_jax import config as config_lib
from mnist_jax.cli.common import (
    add_config_arguments,
    add_data_arguments,
    config_given,
    load_splits,
    main_guard,
    quiet_libraries,
    resolve_config,
)
from mnist_jax.compilation_cache import use_compilation_cache
from mnist_jax.errors import NotWritable
from mnist_jax.run_dir import RunDir
from mnist_jax.writable import make_writable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Train a CNN on MNIST and report its test accuracy. Every config field of the "
                    "preset can be overridden, e.g. --train.epochs 3 --model.conv_features 16,32.",
        allow_abbrev=False,
    )
    parser.add_argument("--workdir", type=Path,
                        help="run directory (default: RUNS_DIR/<preset or config file>-<date>-<time>); "
                             "an existing run there is resumed from its latest checkpoint")
    parser.add_argument("--fresh", action="store_true",
                        help="start the run in --workdir over, deleting its checkpoints and metrics")
    parser.add_argument("--from-step", type=int, metavar="STEP",
                        help="resume from checkpoint STEP; later steps are moved to discarded-checkpoints/")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="where new run directories go; RUNS_DIR/latest points at the newest")
    add_data_arguments(parser)
    cluster = parser.add_argument_group(
        "several processes (one per host; each sees its local devices; all use the same --workdir)")
    cluster.add_argument("--coordinator", metavar="HOST:PORT",
                         help="address of process 0, which all processes connect to (env MNIST_JAX_COORDINATOR)")
    cluster.add_argument("--num-processes", type=int, metavar="N", help="env MNIST_JAX_NUM_PROCESSES")
    cluster.add_argument("--process-id", type=int, metavar="I", help="0 .. N-1 (env MNIST_JAX_PROCESS_ID)")
    cluster.add_argument("--heartbeat-timeout", type=int, metavar="SECONDS",
                         help="a process silent this long counts as dead and the others stop (default 100)")
    add_config_arguments(parser)
    return parser


def choose_config(args: argparse.Namespace, run: RunDir) -> config_lib.Config:
    """Returns the config to train: the run's own when resuming (flags must agree), else the flags'."""
    if args.fresh:
        return resolve_config(args)
    saved = run.read_config()
    if saved is None:
        return resolve_config(args)
    if config_given(args):
        run.check_continues(resolve_config(args, saved))
    return saved


def prepare_workdir(args: argparse.Namespace, run: RunDir) -> None:
    """Makes the run directory ready: created and writable; emptied of the old run with --fresh;
    with --from-step N, steps after N moved to discarded-checkpoints/."""
    try:
        make_writable(run.path)
    except OSError as error:
        raise NotWritable(f"cannot write run directory {run.path} ({error.strerror})", run.path,
                          error.strerror or str(error), "run") from None
    if args.fresh:
        run.clear()
    if args.from_step is not None:
        run.discard_after(args.from_step)


def point_latest(runs_dir: Path, workdir: Path) -> None:
    """Makes RUNS_DIR/latest a symlink to `workdir` when the run lives in RUNS_DIR."""
    if workdir.absolute().parent != runs_dir.absolute() or workdir.name == "latest":
        return
    latest = runs_dir / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(workdir.name)


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.preset or (args.config.stem if args.config else "default")
    workdir = args.workdir or args.runs_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunDir(workdir)
    config = choose_config(args, run)
    if not args.fresh and (summary := run.read_summary()) is not None:
        print(f"{workdir} is finished: test accuracy {100 * summary['test_accuracy']:.2f}%; "
              "pass --fresh to train it again, or a new --workdir")
        return 0
    prepare_workdir(args, run)
    quiet_libraries()
    use_compilation_cache()
    from mnist_jax.training import parallel, trainer

    cluster = parallel.Cluster.from_environment(
        coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
        heartbeat_timeout=args.heartbeat_timeout)
    parallel.use_cpu_devices(parallel.cpu_device_count(config, cluster, parallel.usable_cores()))
    parallel.initialize(cluster)
    lead = parallel.is_lead()
    data = load_splits(args, config.data, log=print if lead else lambda line: None)
    if lead:
        point_latest(args.runs_dir, workdir)
        print(f"run: {workdir}")
    with StopOnSignal() as stop:
        try:
            summary = trainer.train_and_evaluate(config, workdir, data, should_stop=stop.requested)
        except trainer.Stopped as stopped:
            epoch, done = divmod(stopped.step, stopped.steps_in_epoch)
            if not lead:
                return stop.exit_code
            print(f"\n{stop.signal_name}: stopped at step {stopped.step} (epoch {epoch + 1}, step {done} of "
                  f"{stopped.steps_in_epoch}); its checkpoint is complete in {workdir / 'checkpoints'}\n"
                  f"resume with: bin/train --workdir {workdir}", file=sys.stderr)
            return stop.exit_code
    if not lead:
        return 0
    print(f"test accuracy {100 * summary['test_accuracy']:.2f}% (checkpoint of epoch {summary['best_epoch']}, "
          f"validation {100 * summary['best_val_accuracy']:.2f}%) after {summary['total_seconds']:.0f} s")
    print(f"run written to {workdir}: config.json metrics.jsonl accuracy.png loss.png checkpoints/ summary.json")
    return 0


class StopOnSignal:
    """While active, the first SIGINT or SIGTERM asks training to stop after a checkpoint.

    A second SIGINT stops at once (KeyboardInterrupt); finished checkpoints stay intact.
    """

    def __enter__(self):
        self.signal_name, self.exit_code = None, 0
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        print(f"\n{self.signal_name}: finishing the current steps and writing a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
