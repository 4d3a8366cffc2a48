"""A row of digits (a photo of "2026") split into one ink crop per digit, left to right."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mnist_jax.errors import NoInk
from mnist_jax.inference.preprocess import crop_to_mask, digit_ink

COLUMN_OVERLAP = 0.5  # parts overlapping horizontally by this much of the narrower one are one digit
SHORT_PART = 0.5  # a part shorter than this fraction of the row's tallest joins any part it overlaps


def group_parts(boxes: list[tuple[slice, slice]], overlap: float = COLUMN_OVERLAP,
                short: float = SHORT_PART) -> list[list[int]]:
    """Groups ink parts, given as bounding boxes (rows, cols), into digits; returns index lists, left to right.

    Parts are taken by their left edge. A part joins the digit before it when their columns
    overlap by at least `overlap` of the narrower one (parts stacked in one column), or overlap at
    all while one of them is shorter than `short` of the tallest part (a 5's detached flag).
    """
    tallest = max(rows.stop - rows.start for rows, _ in boxes)
    groups: list[list[int]] = []
    spans: list[tuple[int, int, int, int]] = []  # each group's (top, bottom, left, right)
    for index in sorted(range(len(boxes)), key=lambda i: boxes[i][1].start):
        rows, cols = boxes[index]
        if groups:
            top, bottom, left, right = spans[-1]
            shared = min(cols.stop, right) - max(cols.start, left)
            is_short = min(rows.stop - rows.start, bottom - top) < short * tallest
            if shared >= overlap * min(cols.stop - cols.start, right - left) or (shared > 0 and is_short):
                groups[-1].append(index)
                spans[-1] = (min(top, rows.start), max(bottom, rows.stop), min(left, cols.start), max(right, cols.stop))
                continue
        groups.append([index])
        spans.append((rows.start, rows.stop, cols.start, cols.stop))
    return groups


def split_digits(gray: np.ndarray) -> list[np.ndarray]:
    """Returns the ink crop (h, w) of each digit in greyscale (H, W), left to right.

    Digits are the 8-connected ink components (ruled lines and specks dropped), grouped by `group_parts`.
    Digits that touch each other come out as one. Raises NoInk when there is no ink.
    """
    ink, mask = digit_ink(gray)
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    boxes = ndimage.find_objects(labels)
    if not boxes:
        raise NoInk("no ink found: the image looks blank")
    crops = []
    for group in group_parts(boxes):
        mine = np.isin(labels, [index + 1 for index in group])
        crops.append(crop_to_mask(np.where(mine | (labels == 0), ink, 0.0), mine))
    return crops
