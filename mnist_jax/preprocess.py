"""Users' digit images -> 28x28 MNIST-style arrays (white ink on black, centred by mass).

`load_grayscale` is the only function here that touches files. The steps after it are pure
numpy functions, each usable alone:

    gray (H, W) in [0, 1], any polarity, uneven light, noise
      -> to_ink         background surface removed, polarity detected: ink 1, paper 0
      -> ink_mask       Otsu threshold; specks dropped by remove_specks
      -> crop_to_mask   the ink inside the digit's bounding box
      -> crop_to_mnist  thin strokes widened to MNIST's, longest side 20 px,
                        centre of mass at pixel (14, 14) of 28x28
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnist_jax.errors import UserError

MAX_PIXELS = 50_000_000  # larger files are refused rather than decoded
WORKING_SIDE = 1024  # larger images are shrunk to this longest side first: a 20-px digit needs no more
BOX = 20  # MNIST fits each digit into a 20x20 box ...
SIZE = 28  # ... centred by its centre of mass in a 28x28 image
NOISE_SIGMAS = 5.0  # residuals beyond this many noise standard deviations are ink, not paper grain
MIN_CONTRAST = 0.08  # weaker ink than this (of the full black-to-white range) counts as a blank image
EDGE_INK = 0.1  # the faintest ink (of the stroke level) the crop keeps inside the digit's box
SPECK_FRACTION = 0.2  # components spanning less than this fraction of the largest one are specks
# MNIST's stroke width in box pixels, as `crop_to_mnist` measures it on test digits: 1st-99th
# percentiles 1.3-4.5, median 2.2. Strokes under STROKE_LOW are widened to STROKE_TARGET.
STROKE_LOW, STROKE_TARGET = 1.4, 2.2
DETAIL = 4  # stroke width is adjusted with the digit drawn DETAIL times larger than the 20-px box


def load_grayscale(source: Path | IO[bytes], max_pixels: int = MAX_PIXELS, max_side: int = WORKING_SIDE) -> np.ndarray:
    """Reads an image file (a path or a binary file object); returns float32 (H, W) in [0, 1],
    upright per EXIF, alpha flattened.

    Images with a side over `max_side` are shrunk (keeping the aspect ratio) while decoding.
    Raises UserError naming the file when it is missing, empty, not an image, damaged or has
    more than `max_pixels` pixels.
    """
    is_path = isinstance(source, str | Path)
    path = Path(source) if is_path else Path(getattr(source, "name", "<image>"))
    try:
        if is_path and path.is_file() and path.stat().st_size == 0:
            raise UserError(f"{path}: empty file (0 bytes)")
        with Image.open(path if is_path else source) as image:
            if image.width * image.height > max_pixels:
                raise UserError(f"{path}: image of {image.width}x{image.height} pixels is larger than "
                                f"the {max_pixels:,}-pixel limit; crop or shrink it (or raise --max-pixels)")
            image.draft("L", (max_side, max_side))  # JPEG decodes straight at a reduced scale: much faster
            image = ImageOps.exif_transpose(image)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return image_to_gray(image)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        raise UserError(f"{path}: image is larger than the {max_pixels:,}-pixel limit; crop or shrink it") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{path}: damaged or truncated image ({error})") from None


def image_to_gray(image: Image.Image) -> np.ndarray:
    """Returns a Pillow image of any mode as float32 greyscale (H, W) in [0, 1], alpha flattened."""
    if image.width == 0 or image.height == 0:
        raise UserError("empty image (0 pixels)")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16-bit scans: convert() would clip them to white
        values = np.asarray(image, dtype=np.float32)
        peak = float(values.max())
        return values / next(scale for scale in (1.0, 255.0, 65535.0, peak) if peak <= scale)
    return flatten_alpha(np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0)


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


def _robust_sigma(values: np.ndarray) -> float:
    """The standard deviation of Gaussian noise estimated from the median absolute deviation."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def noise_sigma(gray: np.ndarray) -> float:
    """Estimates the pixel noise of `gray` (H, W) from neighbour differences: blind to ink and light."""
    if gray.shape[1] < 2:
        return 0.0
    step = max(1, gray.shape[0] // 512)  # rows enough for a stable median on big images
    return _robust_sigma(np.diff(gray[::step], axis=1)) / np.sqrt(2)


def estimate_background(gray: np.ndarray, grid: int = 64, rounds: int = 4) -> np.ndarray:
    """Returns the paper's shade under uneven light: a quadratic surface (H, W) fitted to `gray` (H, W).

    The fit runs on a copy shrunk to at most `grid` pixels a side. It starts from the image's
    outer ring (paper, even when the digit fills most of the frame) and is repeated `rounds`
    times over the pixels within 2.5 robust sigmas of the last surface, so the ink, dark or
    light, does not pull the surface.
    """
    height, width = gray.shape
    small = np.asarray(Image.fromarray(gray.astype(np.float32)).resize(
        (min(width, grid), min(height, grid)), Image.Resampling.BOX))

    rows, cols = small.shape
    y, x = _grid(rows, cols)
    design = np.stack(np.broadcast_arrays(np.ones_like(x), x, y, x * x, x * y, y * y), axis=-1).reshape(-1, 6)
    values = small.ravel()
    keep = np.ones(small.shape, bool)
    keep[2:-2, 2:-2] = False
    keep = keep.ravel()
    for _ in range(rounds):
        used = design[keep]  # normal equations: 6x6, and lstsq copes when a 1-pixel-high image makes them singular
        coefficients = np.linalg.lstsq(used.T @ used, used.T @ values[keep], rcond=None)[0].astype(np.float32)
        residual = values - design @ coefficients
        keep = np.abs(residual) <= 2.5 * _robust_sigma(residual[keep]) + 1e-3
    y, x = _grid(height, width)
    c = coefficients
    return (c[0] + c[1] * x + c[3] * x * x) + y * (c[2] + c[4] * x) + c[5] * y * y  # (H, W) without an (H, W, 6)


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres as coordinates in [-1, 1]: y (rows, 1) and x (1, cols)."""
    return (np.linspace(-1, 1, rows, dtype=np.float32)[:, None], np.linspace(-1, 1, cols, dtype=np.float32)[None, :])


def to_ink(gray: np.ndarray) -> np.ndarray:
    """Returns an ink map (H, W) in [0, 1]: paper 0, typical stroke 1, whatever the polarity and light.

    The background surface is subtracted; the ink's sign is that of the residuals standing out
    beyond NOISE_SIGMAS noise sigmas (noise is two-sided, ink one-sided). An image whose ink is
    weaker than MIN_CONTRAST gives all zeros.
    """
    residual = gray - estimate_background(gray)
    strong = np.abs(residual) > max(NOISE_SIGMAS * noise_sigma(gray), MIN_CONTRAST)
    if not strong.any():
        return np.zeros_like(gray, dtype=np.float32)
    ink = residual if residual[strong].sum() > 0 else -residual
    stroke = float(np.percentile(ink[strong & (ink > 0)], 90))  # the typical stroke's strength
    if stroke < MIN_CONTRAST:
        return np.zeros_like(gray, dtype=np.float32)
    return np.clip(ink / stroke, 0.0, 1.0).astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Returns Otsu's threshold for `values` in [0, 1]: the cut maximising the between-class variance.

    N. Otsu, "A threshold selection method from gray-level histograms", IEEE SMC 9(1), 1979.
    """
    counts = np.bincount(np.clip((np.ravel(values) * bins).astype(np.int32), 0, bins - 1), minlength=bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * centres)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][np.argmax(between)])


def ink_mask(ink: np.ndarray) -> np.ndarray:
    """Returns bool (H, W): where `ink` (from `to_ink`) is the digit, by Otsu's threshold.

    The threshold is taken on the ink lightly smoothed (so isolated noisy pixels stay below it)
    and kept within [0.2, 0.6] of the stroke level.
    """
    smooth = ndimage.gaussian_filter(ink, 1.0)
    return smooth > np.clip(otsu_threshold(smooth), 0.2, 0.6)


def remove_specks(mask: np.ndarray, min_fraction: float = SPECK_FRACTION) -> np.ndarray:
    """Returns `mask` (H, W) without specks: 8-connected components whose extent (longer side of
    their bounding box) is under `min_fraction` of the largest extent of any component.

    Extent, not area: a broken stroke's fragment is long and thin, dust is small every way.
    """
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count <= 1:
        return mask
    extents = np.array([max(rows.stop - rows.start, cols.stop - cols.start)
                        for rows, cols in ndimage.find_objects(labels)])
    keep = np.concatenate([[False], extents >= min_fraction * extents.max()])
    return keep[labels]


def crop_to_mask(ink: np.ndarray, mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Returns the ink (h, w) near `mask`: zero farther than `margin` px from it, cropped to its extent.

    The margin keeps the soft edges of the strokes that the threshold cut; the crop ends where
    the ink falls under EDGE_INK, as MNIST's 20-px box ends at its digits' faintest edge.
    Raises UserError when the mask is empty (a blank image).
    """
    if not mask.any():
        raise UserError("no ink found: the image looks blank")
    near = ndimage.binary_dilation(mask, iterations=margin) if margin else mask
    kept = np.where(near, ink, 0.0).astype(np.float32)
    inked = kept > EDGE_INK
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    return kept[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(mask: np.ndarray) -> float:
    """Estimates the width in pixels of the strokes in `mask` (H, W) bool.

    For a stroke of width w, the mean distance of its pixels to the nearest background pixel is
    w/4 (plus half a pixel on a grid), so w = 4 * (mean distance - 0.5): within 5% for w >= 5 px,
    3.3 for w = 3.
    """
    if not mask.any():
        return 0.0
    return 4.0 * (float(ndimage.distance_transform_edt(mask)[mask].mean()) - 0.5)


def _disc(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius + radius  # +radius: a rounder disc for small radii


def thicken_thin_strokes(ink: np.ndarray, scale: float = DETAIL, low: float = STROKE_LOW,
                         target: float = STROKE_TARGET) -> np.ndarray:
    """Returns ink (h', w') whose strokes are at least MNIST-like: a fine pen's lines widened.

    `ink` (h, w) is a digit `scale` times larger than the 20-px box; widths are judged in box
    pixels. Strokes narrower than `low` are dilated (grey morphology, disc footprint; the
    canvas grows by the radius) to `target`. Thick strokes are left alone: eroding them cost
    accuracy in the evaluation (bin/eval-inputs, thick-pen: 98.8% -> 97.0%).
    """
    width = stroke_width(ink > 0.5) / scale
    radius = round((target - width) * scale / 2)
    if width >= low or radius <= 0:
        return ink
    return ndimage.grey_dilation(np.pad(ink, radius), footprint=_disc(radius))


def fit_to_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Resizes (h, w) so its longer side is `box`, keeping the aspect ratio (Lanczos); peak scaled to 1."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.clip(np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)),
                      0.0, None)
    return resized / max(float(resized.max()), 1e-6)


def center_by_mass(ink: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Places `ink` (h, w <= size) in a (size, size) canvas with its centre of mass at pixel size // 2.

    Pixel (14, 14) of 28x28, not the geometric centre 13.5: that is where MNIST's own digits
    have their centre of mass (measured: 13.99, 14.00 on average).
    """

    height, width = ink.shape
    com_y, com_x = ndimage.center_of_mass(ink)
    top = int(np.clip(round(size // 2 - com_y), 0, size - height))
    left = int(np.clip(round(size // 2 - com_x), 0, size - width))
    canvas = np.zeros((size, size), np.float32)
    canvas[top : top + height, left : left + width] = ink
    return canvas


def crop_to_mnist(crop: np.ndarray) -> np.ndarray:
    """Turns a digit's ink crop (h, w) into MNIST form: uint8 (28, 28, 1)."""
    detailed = thicken_thin_strokes(fit_to_box(crop, DETAIL * BOX))
    digit = center_by_mass(fit_to_box(detailed))
    return np.round(digit * 255).astype(np.uint8)[:, :, None]


def find_digit(gray: np.ndarray) -> np.ndarray:
    """Returns the ink crop (h, w) of the one digit in greyscale (H, W); UserError if there is none."""
    ink = to_ink(gray)
    return crop_to_mask(ink, remove_specks(ink_mask(ink)))


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Runs the whole pipeline on greyscale (H, W) in [0, 1]; returns uint8 (28, 28, 1)."""
    return crop_to_mnist(find_digit(gray))


def preprocess_file(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Reads an image file and returns it as MNIST-style uint8 (28, 28, 1)."""
    try:
        return to_mnist(load_grayscale(path, max_pixels))
    except UserError as error:
        if str(error).startswith(str(path)):
            raise
        raise UserError(f"{path}: {error}") from None
