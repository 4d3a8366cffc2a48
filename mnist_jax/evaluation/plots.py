"""Matplotlib figures: a run's history, evaluation results, augmented digits (no pyplot: safe in threads)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def preload() -> threading.Thread:
    """Imports matplotlib (half a second of Python) in a background thread, while the caller goes on
    with work that waits on XLA; returns the thread. `_figure` then finds it imported."""
    def load() -> None:
        for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):  # the figure, and savefig's PNG
            importlib.import_module(module)

    thread = threading.Thread(target=load, name="preload-matplotlib", daemon=True)
    thread.start()
    return thread


def _figure(**options):
    """Returns a matplotlib Figure; matplotlib is imported on first use, so tools that never plot
    skip its 0.4 s import."""
    from matplotlib.figure import Figure

    return Figure(**options)


CURVES = {
    "accuracy": ("train_accuracy", "val_accuracy", "Accuracy"),
    "loss": ("train_loss", "val_loss", "Cross-entropy loss"),
}


def plot_history(history: list[dict], directory: Path) -> list[Path]:
    """Writes accuracy.png and loss.png (training vs validation per epoch); returns their paths.

    history: one dict per epoch with "epoch" and the keys named in CURVES.
    """

    paths = []
    epochs = [record["epoch"] for record in history]
    for name, (train_key, val_key, ylabel) in CURVES.items():
        figure = _figure(figsize=(6, 4), dpi=100)
        # Fixed margins that fit these labels: a layout engine would cost 40% of every epoch's plotting.
        axes = figure.subplots(gridspec_kw={"left": 0.13, "right": 0.97, "bottom": 0.12, "top": 0.92})
        axes.plot(epochs, [r[train_key] for r in history], "o-", label="training (mean over the epoch)")
        axes.plot(epochs, [r[val_key] for r in history], "s-", label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.set_title(f"{ylabel}: training vs validation")
        axes.xaxis.get_major_locator().set_params(integer=True)
        if name == "accuracy":
            axes.yaxis.set_major_formatter(lambda value, _: f"{100 * value:.1f}%")
        axes.grid(alpha=0.3)
        axes.legend()
        path = Path(directory) / f"{name}.png"
        figure.savefig(path)
        paths.append(path)
    return paths


def plot_confusion(confusion: np.ndarray, path: Path, title: str, classes: Sequence[str], noun: str = "digit") -> Path:
    """Writes the confusion matrix (C, C) of counts (row = true class) with every count printed; the ticks
    name `classes`, the axes say "true/predicted `noun`"."""
    side = max(6.0, 0.32 * len(classes))
    figure = _figure(figsize=(side, side * 0.9), dpi=100, layout="constrained")
    axes = figure.subplots()
    # Log colours: the off-diagonal errors (a handful each) stay visible beside diagonals of ~1,000.
    image = axes.imshow(np.log1p(confusion), cmap="Blues")
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            dark = image.norm(np.log1p(count)) > 0.6
            axes.text(col, row, str(count), ha="center", va="center", fontsize=7 if row == col else 8,
                      color="white" if dark else "black")
    axes.set_xticks(range(len(confusion)), classes, rotation=90 if max(map(len, classes)) > 2 else 0)
    axes.set_yticks(range(len(confusion)), classes)
    axes.set_xlabel(f"predicted {noun}")
    axes.set_ylabel(f"true {noun}")
    axes.set_title(title)
    figure.savefig(path)
    return Path(path)


def plot_misclassified(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: Path,
                       classes: Sequence[str], limit: int = 60, columns: int = 10) -> Path:
    """Writes a gallery of the wrongly predicted images, most confident mistakes first.

    images: uint8 (N, 28, 28, 1); labels: (N,); probabilities: (N, C). Each image is titled
    with its true class's name and the predicted one's with its probability (and the true one's).
    """
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    shown = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:limit]
    rows = max(1, -(-len(shown) // columns))
    figure = _figure(figsize=(columns * 0.95, rows * 1.25 + 0.4), dpi=100, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, shown, strict=False):
        axes.imshow(images[index, :, :, 0], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        guess, truth = predicted[index], labels[index]
        axes.set_title(f"{classes[truth]}→{classes[guess]} {100 * probabilities[index, guess]:.0f}%\n"
                       f"p({classes[truth]}) {100 * probabilities[index, truth]:.0f}%", fontsize=7)
    figure.suptitle(f"{len(wrong)} misclassified of {len(labels):,}"
                    + (f" (the {len(shown)} most confident shown)" if len(shown) < len(wrong) else "")
                    + ": true→predicted", fontsize=9)
    figure.savefig(path)
    return Path(path)


def plot_calibration(bins: dict, path: Path, title: str) -> Path:
    """Writes a reliability diagram: accuracy vs confidence per bin, and how many predictions each holds.

    bins: `metrics.calibration`'s result (edges, count, accuracy, confidence, ece).
    """
    figure = _figure(figsize=(5.5, 6), dpi=100, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    edges, count = bins["edges"], bins["count"]
    width, used = np.diff(edges), count > 0
    top.bar(edges[:-1][used], bins["accuracy"][used], width=width[used], align="edge", edgecolor="black",
            linewidth=0.5, label="accuracy")
    centres = (edges[:-1] + width / 2)[used]
    top.plot(centres, bins["confidence"][used], "_", color="tab:red", markersize=16, markeredgewidth=2.5,
             label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nexpected calibration error {100 * bins['ece']:.2f}%")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], np.maximum(count, 0.8), width=width, align="edge", color="gray")  # log axis: 0 -> floor
    bottom.set_yscale("log")
    bottom.set_ylim(0.8, None)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("predictions")
    figure.savefig(path)
    return Path(path)


def plot_augmentations(rows: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """Writes a grid of digits: one row per (title, float images (K, 28, 28, 1) in [0, 1])."""
    columns = max(len(images) for _, images in rows)
    figure = _figure(figsize=(columns * 0.8 + 1.6, len(rows) * 0.85), dpi=100, layout="constrained")
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for (title, images), line in zip(rows, grid, strict=True):
        line[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
        for axes, image in zip(line, images, strict=False):
            axes.imshow(image[:, :, 0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        for axes in line:
            axes.set_xticks([])
            axes.set_yticks([])
    figure.savefig(path)
    return Path(path)
