"""The page in a real headless Chromium (through Playwright), drawn on with pointer strokes: for the tests
and the README's screenshot. Needs `pip install playwright` and a Chromium (Debian: apt install chromium)."""

from __future__ import annotations

import os
import shutil

import numpy as np

# Debian's Chromium, run as root in a closed network: no sandbox, no GPU, no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
INK = 128  # pixels of an MNIST digit at least this bright are traced


def chromium_path() -> str | None:
    """The Chromium to drive: $CHROMIUM, else the first of chromium, chromium-browser on PATH; None if none."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright):
    """Starts headless Chromium (see `chromium_path`) under a started Playwright; returns the Browser."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def ink_runs(image: np.ndarray, threshold: int = INK) -> list[tuple[float, int, int]]:
    """The horizontal runs of ink in a digit uint8 (28, 28, 1) or (28, 28), two pixel rows at a time (the
    page's pen is two MNIST pixels wide): (row between the two, first column, last column)."""
    ink = np.asarray(image).reshape(14, 2, 28).max(axis=1) >= threshold
    runs = []
    for pair, line in enumerate(ink):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))
        starts, stops = edges[::2], edges[1::2] - 1
        runs += [(2 * pair + 0.5, int(start), int(stop)) for start, stop in zip(starts, stops, strict=True)]
    return runs


def draw_digit(page, image: np.ndarray, cell: int = 0, cells: int = 1, selector: str = "#canvas") -> None:
    """Draws MNIST digit `image` on the page's canvas with the mouse: one pointer stroke along each run of
    ink (`ink_runs`), the digit filling cell `cell` of `cells` side by side."""
    box = page.locator(selector).bounding_box()
    side = box["width"] / cells
    left = box["x"] + cell * side

    def at(row: float, column: float) -> tuple[float, float]:
        return left + (column + 0.5) * side / 28, box["y"] + (row + 0.5) * box["height"] / 28

    for row, first, last in ink_runs(image):
        page.mouse.move(*at(row, first))
        page.mouse.down()
        page.mouse.move(*at(row, last))
        page.mouse.up()


def wait_for_answer(page) -> tuple[str, str]:
    """Waits until the page shows an answer or an error; returns (its state, "done" or "error", and the
    digit or number shown, or the error message)."""
    page.wait_for_function("['done', 'error'].includes(document.querySelector('#result').dataset.state)",
                           polling="raf")
    state = page.get_attribute("#result", "data-state")
    return state, page.text_content("#digit" if state == "done" else "#message")
