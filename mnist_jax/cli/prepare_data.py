"""bin/prepare-data: put a verified data set (default MNIST) into a tfds data directory."""

from __future__ import annotations

import argparse
import sys

from mnist_jax.cli.common import add_data_arguments, main_guard, prepare_data, quiet_libraries
from mnist_jax.data import catalog


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prepare-data",
        description="Prepare a data set as a tensorflow-datasets directory (<data-dir>/<name>[/<config>]/<version>, "
                    "as tfds's own builder reads it) and verify it.",
    )
    parser.add_argument("--data.name", dest="data_name", default=catalog.MNIST.name, metavar="NAME",
                        help=f"the data set: {', '.join(catalog.DATASETS)} (default: mnist)")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    spec = catalog.get(args.data_name)
    quiet_libraries()
    from mnist_jax.data import dataset

    data_dir = prepare_data(args, spec)
    arrays = dataset.load(data_dir, spec)  # reads it back and checks the invariants again
    print(f"data: verified {len(arrays.train_images):,} training and {len(arrays.test_images):,} test images of "
          f"{spec.title} in {dataset.prepared_dir(data_dir, spec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
