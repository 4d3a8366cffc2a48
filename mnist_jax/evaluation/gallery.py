"""The README's gallery: for each example, the input image, the 28x28 image the model saw, the prediction."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Example:
    title: str  # what kind of input it is
    image: np.ndarray  # the input as the user's file shows it: greyscale (H, W) or RGB(A) (H, W, C), uint8
    seen: np.ndarray  # uint8 (28, 28, 1): what the model saw
    digit: str  # the predicted class's name
    probability: float
    truth: str  # the true class's name


def save_gallery(examples: list[Example], path: Path, columns: int = 8) -> None:
    """Writes a PNG of `examples` in rows of `columns`: input above, model's view below, prediction under it.

    The figure is stored with a 32-colour palette, which keeps it to tens of KB.
    """
    rows = -(-len(examples) // columns)
    figure = Figure(figsize=(1.25 * columns, 2.75 * rows))
    axes = figure.subplots(2 * rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    for index, example in enumerate(examples):
        row, column = divmod(index, columns)
        above, below = axes[2 * row, column], axes[2 * row + 1, column]
        above.imshow(example.image, cmap="gray", vmin=0, vmax=255)
        above.set_title(example.title, fontsize=7)
        below.imshow(example.seen[..., 0], cmap="gray", vmin=0, vmax=255)
        mark = "" if example.digit == example.truth else f" (is {example.truth})"
        below.set_title(f"→ {example.digit}  {100 * example.probability:.0f}%{mark}", fontsize=7,
                        color="black" if not mark else "firebrick")
    figure.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=32).save(path, optimize=True)
