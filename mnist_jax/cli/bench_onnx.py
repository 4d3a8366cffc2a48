"""bin/bench-onnx: an exported model's size, single-image latency and batch throughput on onnxruntime at each
thread count, and the time and memory of a whole bin/predict --model process. JAX-free: runs on the light install."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mnist_jax.cli.common import main_guard, positive_int, positive_ints, print_results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-onnx",
        description="Measure ONNX models written by bin/export on this machine: file size; per onnxruntime "
                    "intra-op thread count, the median time of one single-image prediction and the images per "
                    "second of a batch; the wall-clock time and peak memory (RSS) of a whole bin/predict --model "
                    "process on one image file. Prints a table and JSON.",
        allow_abbrev=False,
    )
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--threads", type=positive_ints, default=(1, 2), metavar="N,N,...",
                        help="onnxruntime intra-op thread counts (default 1,2)")
    parser.add_argument("--runs", type=positive_int, default=500, help="single-image predictions timed (default 500)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="images per batch (default 1000)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="batches timed, and bin/predict processes run (default 5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    return parser


def machine() -> dict:
    import onnxruntime

    from mnist_jax.evaluation.figures import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
            "load_average_1min": os.getloadavg()[0]}


def measure(args: argparse.Namespace) -> dict:
    """Returns {"machine", "models": [{"model", "precision", "size_bytes", "threads": {...}, "predict_process"}]}."""
    from mnist_jax.evaluation import onnx_timing
    from mnist_jax.evaluation.figures import predict_processes
    from mnist_jax.inference.onnx_model import load_onnx

    results = {"machine": machine(), "runs": args.runs, "batch_size": args.batch_size, "repeats": args.repeats,
               "models": []}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-onnx-") as scratch:
        image = Path(scratch) / "seven.png"
        onnx_timing.drawn_digit().save(image)
        for path in args.models:
            entry = {"model": str(path), "threads": {}}
            for threads in args.threads:
                model = load_onnx(path, threads)
                entry.update(precision=model.info.precision, size_bytes=path.stat().st_size)
                entry["threads"][threads] = {
                    "latency_ms": onnx_timing.latency(model, args.runs),
                    "images_per_second": onnx_timing.throughput(model, args.batch_size, args.repeats)}
            entry["predict_process"] = predict_processes(["--model", str(path), str(image)], args.repeats)
            results["models"].append(entry)
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    return results


def format_table(results: dict) -> str:
    m = results["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}; 1-min load average "
             f"{m['load_average_1min']:.2f} before, {m['load_average_1min_end']:.2f} after",
             f"{'model':<32} {'precision':<9} {'size':>10} {'threads':>7} {'1 image, median':>16} "
             f"{'batch ' + format(results['batch_size'], ','):>14}"]
    for entry in results["models"]:
        for index, (threads, figures) in enumerate(entry["threads"].items()):
            head = (f"{entry['model']:<32} {entry['precision']:<9} {entry['size_bytes'] / 1024:>6,.0f} KiB"
                    if index == 0 else " " * 53)
            lines.append(f"{head} {threads:>7} {figures['latency_ms']['median']:>13.3f} ms "
                         f"{figures['images_per_second']['median']:>8,.0f} img/s")
    for entry in results["models"]:
        process = entry["predict_process"]
        lines.append(f"bin/predict --model {entry['model']} on one PNG: {process['seconds']['median']:.2f} s whole "
                     f"process, peak RSS {process['peak_rss_mib']['median']:.0f} MiB (medians of "
                     f"{results['repeats']})")
    return "\n".join(lines)


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = measure(args)
    print_results(format_table(results), results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
