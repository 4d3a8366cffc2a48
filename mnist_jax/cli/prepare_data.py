"""bin/prepare-data: put verified MNIST into a tfds data directory."""

from __future__ import annotations

import argparse
import sys

from mnist_jax.cli.common import add_data_arguments, main_guard, prepare_data, quiet_libraries


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prepare-data",
        description="Prepare MNIST as a tensorflow-datasets directory (<data-dir>/mnist/3.0.1) and verify it.",
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    quiet_libraries()
    from mnist_jax.data import dataset

    data_dir = prepare_data(args)
    dataset.load(data_dir)  # decodes once, caches, and checks the invariants again
    print(f"data: verified 60,000 training and 10,000 test images in {dataset.prepared_dir(data_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
