"""Writes a figure of real training digits and random augmentations of them, one row per transform.

`make augment-figure` runs it to regenerate docs/augment.png:
    python -m mnist_jax.cli.augment_figure --out docs/augment.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_jax.cli.common import add_data_arguments, main_guard, prepare_data, quiet_libraries
from mnist_jax.config import AugmentConfig

# Each transform alone at a typical training strength, then all of them together.
ROWS = {
    "rotation ±15°": AugmentConfig(rotation=15),
    "scale ±15%": AugmentConfig(scale=0.15),
    "shear ±15°": AugmentConfig(shear=15),
    "shift ±3 px": AugmentConfig(translation=3),
    "elastic α 34, σ 4": AugmentConfig(elastic_alpha=34, elastic_sigma=4),
    "coarse, 8-20 px": AugmentConfig(coarse=1.0),
    "blur σ 0-1.5 px": AugmentConfig(blur=1.5),
    "pen +2 px": AugmentConfig(stroke=1.0),
    "all of them": AugmentConfig(rotation=15, scale=0.15, shear=15, translation=3, elastic_alpha=34, elastic_sigma=4,
                                 coarse=0.5, blur=1.0, stroke=0.5),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augment_figure", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--digits", type=int, default=8, choices=range(1, 21), metavar="N",
                        help="how many training digits (columns), 1-20 (default 8)")
    add_data_arguments(parser)
    return parser


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    import jax
    import numpy as np

    from mnist_jax.data import dataset
    from mnist_jax.data.augment import augment
    from mnist_jax.evaluation import plots

    images = dataset.load(prepare_data(args)).train_images[: args.digits].astype(np.float32) / 255.0
    key = jax.random.key(0)
    rows = [("original", images)] + [
        (title, np.asarray(augment(images, jax.random.fold_in(key, index), config)))
        for index, (title, config) in enumerate(ROWS.items())
    ]
    print(f"wrote {plots.plot_augmentations(rows, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
