"""Users' digit images -> 28x28 MNIST-style arrays (white ink on black, centred by mass).

`load_grayscale` is the only function here that touches files; the steps after it are pure
numpy functions of a float32 greyscale image (H, W) in [0, 1], each usable alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_jax.errors import UserError

MAX_PIXELS = 50_000_000  # larger files are refused rather than decoded
INK_THRESHOLD = 0.25  # of the ink range: what counts as ink when finding the digit
BOX = 20  # MNIST fits each digit into a 20x20 box ...
SIZE = 28  # ... centred by its centre of mass in a 28x28 image


def load_grayscale(path: Path) -> np.ndarray:
    """Reads an image file; returns float32 (H, W) in [0, 1], upright per EXIF, alpha flattened.

    Raises UserError naming the file when it is missing, not an image, damaged or too large.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise UserError(f"{path}: image of {image.width}x{image.height} pixels is larger than "
                                f"the {MAX_PIXELS:,}-pixel limit; crop or shrink it")
            image = ImageOps.exif_transpose(image)
            image.load()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: damaged or truncated image ({error})") from None
    if image.width == 0 or image.height == 0:
        raise UserError(f"{path}: empty image")
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    return flatten_alpha(rgba)


def flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composites RGBA (H, W, 4) in [0, 1] onto a plain background; returns luminance (H, W).

    The background is the opposite of the opaque pixels' typical shade, so a drawing of
    either colour on a transparent canvas keeps its contrast.
    """
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    alpha = rgba[..., 3]
    opaque = alpha > 0.5
    if opaque.all():
        return luminance
    background = 1.0 if not opaque.any() or np.median(luminance[opaque]) < 0.5 else 0.0
    return luminance * alpha + background * (1.0 - alpha)


def to_ink(gray: np.ndarray) -> np.ndarray:
    """Returns an ink map (H, W) in [0, 1]: background 0, strongest ink 1, whatever the polarity.

    Polarity comes from the border: the median of the outermost pixels is taken as paper.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = float(np.median(border))
    ink = gray - paper if paper < 0.5 else paper - gray
    peak = float(ink.max())
    if peak <= 0.05:
        return np.zeros_like(gray)
    return np.clip(ink / peak, 0.0, 1.0)


def crop_to_ink(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> np.ndarray:
    """Returns the smallest rectangle of `ink` holding every value above `threshold`.

    Raises UserError when there is no ink at all (a blank image).
    """
    rows = np.flatnonzero((ink > threshold).any(axis=1))
    cols = np.flatnonzero((ink > threshold).any(axis=0))
    if rows.size == 0:
        raise UserError("no ink found: the image looks blank")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_to_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Resizes (h, w) so its longer side is `box`, keeping the aspect ratio; peak stays at 1."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    resized = np.clip(resized, 0.0, None)
    return resized / max(float(resized.max()), 1e-6)


def center_by_mass(ink: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Places `ink` (h, w <= size) in a (size, size) canvas with its centre of mass at pixel size // 2.

    Pixel (14, 14) of 28x28, not the geometric centre 13.5: that is where MNIST's own digits
    have their centre of mass (measured: 13.99, 14.00 on average).
    """
    from scipy import ndimage  # here, not at the top: `import mnist_jax` (so every bin/train) would pay 0.2 s

    height, width = ink.shape
    com_y, com_x = ndimage.center_of_mass(ink)
    top = int(np.clip(round(size // 2 - com_y), 0, size - height))
    left = int(np.clip(round(size // 2 - com_x), 0, size - width))
    canvas = np.zeros((size, size), np.float32)
    canvas[top : top + height, left : left + width] = ink
    return canvas


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Runs the whole pipeline on greyscale (H, W) in [0, 1]; returns uint8 (28, 28, 1)."""
    digit = center_by_mass(fit_to_box(crop_to_ink(to_ink(gray))))
    return np.round(digit * 255).astype(np.uint8)[:, :, None]


def preprocess_file(path: Path) -> np.ndarray:
    """Reads an image file and returns it as MNIST-style uint8 (28, 28, 1)."""
    try:
        return to_mnist(load_grayscale(path))
    except UserError as error:
        if str(error).startswith(str(path)):
            raise
        raise UserError(f"{path}: {error}") from None
