"""Users' digit images -> 28x28 MNIST-style arrays (white ink on black, centred by mass).

`load_grayscale` is the only function here that touches files. The steps after it are pure
numpy functions, each usable alone:

    gray (H, W) in [0, 1], any polarity, uneven light, noise
      -> restore_resolution  a coarse (blocky or bilinear) enlargement made smooth, small images enlarged
      -> without_surroundings a photographed sheet cropped out of the desk around it
      -> to_ink              background surface removed, polarity detected: ink 1, paper 0
      -> ink_mask            Otsu threshold; ruled lines (ruled_lines) and specks (remove_specks) dropped
      -> crop_to_mask        the ink inside the digit's bounding box
      -> crop_to_mnist       strokes brought to MNIST's width, longest side 20 px,
                             centre of mass at pixel (14, 14) of 28x28

That last step follows the data set's own normalisation, a `Framing`: MNIST's (above, also KMNIST's),
EMNIST's (the character centred in a square frame with a 2-px border, Cohen et al. 2017) or
Fashion-MNIST's (the item's longer side filling the frame, centred; no pen strokes to adjust).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage, spatial

from mnist_jax.errors import ImageTooLarge, NoInk, NotAnImage
from mnist_jax.inference.files import MAX_PIXELS

WORKING_SIDE = 1024  # larger images are shrunk to this longest side first: a 20-px digit needs no more
BOX = 20  # MNIST fits each digit into a 20x20 box ...
SIZE = 28  # ... centred by its centre of mass in a 28x28 image
NOISE_SIGMAS = 5.0  # residuals beyond this many noise standard deviations are ink, not paper grain
MIN_CONTRAST = 0.08  # weaker ink than this (of the full black-to-white range) counts as a blank image
BORDER_INK = 0.15  # more of the border than this standing out from the fitted paper: the ink reaches it
EDGE_INK = 0.1  # the faintest ink (of the stroke level) the crop keeps inside the digit's box
HAIRLINE = 0.7  # ink this faint, relative to the mask's threshold, is kept where it joins the mask
SPECK_FRACTION = 0.2  # components spanning less than this fraction of the largest one are specks
# MNIST's stroke width in box pixels, as `crop_to_mnist` measures it on test digits: 1st-99th
# percentiles 1.3-4.5, median 2.2. Strokes under STROKE_LOW are widened to STROKE_TARGET.
STROKE_LOW, STROKE_TARGET = 1.4, 2.2
STROKE_HIGH, STROKE_THICK_TARGET = 4.5, 3.5  # strokes over MNIST's 99th percentile are thinned to this
SOFT_EDGES = 1.0  # box px: strokes whose edges blur over more than this are not thinned
MIN_SIDE = 56  # smaller images are enlarged to this before thresholding
QUANTUM = 1.5 / 255  # changes smaller than this are 8-bit rounding, not image content
LINE_SPAN = 0.8  # a straight run across this share of the image can be a ruled line ...
LINE_THINNESS = 0.75  # ... when thinner than this share of the digit's stroke width
LINE_WIDTH = 0.05  # ... and than this share of the image's longer side
LINE_CROSSING = 9  # px: a stroke crossing a line is kept across gaps up to this long
DETAIL = 4  # stroke width is adjusted with the digit drawn DETAIL times larger than the 20-px box
SHEET_GRID = 128  # px: the longer side of the copy a sheet is looked for on
SHEET_SHARE = 0.4  # a sheet covers at least this share of the photo ...
SHEET_RECTANGULARITY = 0.85  # ... fills this share of a rectangle around it (a page, not a marker digit's blob) ...
SHEET_STROKES = 0.25  # ... holds a digit whose strokes are this thin beside its depth (not a marker digit's loops) ...
SURROUNDINGS_DEPTH = 0.03  # ... and what lies around it is this deep at the border (of the shorter side): a desk, not a line
SURROUNDINGS_INSIDE = 0.2  # ... at most this share of it inside the sheet's outline (not a digit reaching the border) ...
SHEET_EDGE = 0.5  # ... and changes to it at the sheet's edge by at least this share of their contrast: not a shadow


@dataclasses.dataclass(frozen=True)
class Framing:
    """How a data set placed its images in 28x28: the longer side's length, the centring, the strokes."""

    box: int = BOX  # px: the longer side of the character or item
    centre: str = "mass"  # "mass": its centre of mass at pixel (14, 14) (MNIST) | "box": its bounding box centred
    strokes: bool = True  # pen strokes brought to MNIST's width (False: filled items, kept as they are)


DIGIT_FRAMING = Framing()
CHARACTER_FRAMING = Framing(box=24, centre="box")  # EMNIST: a 2-px border around the centred character
ITEM_FRAMING = Framing(box=SIZE, centre="box", strokes=False)  # Fashion-MNIST: the item fills the frame


def load_grayscale(source: Path | IO[bytes], max_pixels: int = MAX_PIXELS, max_side: int = WORKING_SIDE) -> np.ndarray:
    """Reads an image file (a path or a binary file object); returns float32 (H, W) in [0, 1],
    upright per EXIF, alpha flattened.

    Images with a side over `max_side` are shrunk (keeping the aspect ratio) while decoding.
    Raises NotAnImage when it is missing, empty, not an image or damaged, ImageTooLarge when it has
    more than `max_pixels` pixels; both name the file.
    """
    is_path = isinstance(source, str | Path)
    path = Path(source) if is_path else getattr(source, "name", None)  # None: errors name no file
    try:
        if is_path and path.is_file() and path.stat().st_size == 0:
            raise NotAnImage("empty file (0 bytes)", path)
        with Image.open(path if is_path else source) as image:
            if image.width * image.height > max_pixels:
                raise ImageTooLarge(f"image of {image.width}x{image.height} pixels is larger than "
                                    f"the {max_pixels:,}-pixel limit", path, max_pixels)
            image.draft("L", (max_side, max_side))  # JPEG decodes straight at a reduced scale: much faster
            image = ImageOps.exif_transpose(image)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return image_to_gray(image)
    except FileNotFoundError:
        raise NotAnImage("no such file", path) from None
    except IsADirectoryError:
        raise NotAnImage("is a directory, not an image", path) from None
    except UnidentifiedImageError:
        raise NotAnImage("not an image (or a format Pillow cannot read)", path) from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image is larger than the {max_pixels:,}-pixel limit", path, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise NotAnImage(f"damaged or truncated image ({error})", path) from None


def image_to_gray(image: Image.Image) -> np.ndarray:
    """Returns a Pillow image of any mode as float32 greyscale (H, W) in [0, 1], alpha flattened."""
    if image.width == 0 or image.height == 0:
        raise NotAnImage("empty image (0 pixels)")
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


def estimate_background(gray: np.ndarray, paper: np.ndarray | None = None, grid: int = 64,
                        rounds: int = 4) -> np.ndarray:
    """Returns the paper's shade under uneven light: a quadratic surface (H, W) fitted to `gray` (H, W).

    The fit runs on a copy shrunk to at most `grid` pixels a side. It starts from the pixels of
    `paper` (bool (H, W)), by default the image's outer ring (paper, even when the digit fills most
    of the frame), and is repeated `rounds` times over the pixels within 2.5 robust sigmas of the
    last surface, so the ink, dark or light, does not pull the surface.
    """
    height, width = gray.shape
    size = (min(width, grid), min(height, grid))
    small = np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX))

    rows, cols = small.shape
    y, x = _grid(rows, cols)
    design = np.stack(np.broadcast_arrays(np.ones_like(x), x, y, x * x, x * y, y * y), axis=-1).reshape(-1, 6)
    values = small.ravel()
    if paper is None:
        keep = np.ones(small.shape, bool)
        keep[2:-2, 2:-2] = False
    else:  # the cells that are all paper, or mostly when too few are
        share = np.asarray(Image.fromarray(paper.astype(np.float32)).resize(size, Image.Resampling.BOX))
        keep = share > 0.999 if np.sum(share > 0.999) >= 6 else share > 0.5
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


def _change_spacing(changed: np.ndarray) -> float:
    """The spacing k of the lines where an enlarged image changes, from `changed` (n,) bool per line;
    1 unless they form a regular grid: at least 4 runs of changed lines, their starts evenly spaced,
    at most half of the lines between the first and the last changed."""
    starts = np.flatnonzero(changed & ~np.concatenate([[False], changed[:-1]]))
    if len(starts) < 4:
        return 1.0
    spacing = np.diff(starts)
    low, median, high = np.percentile(spacing, [25, 50, 75])
    span = changed[starts[0] : starts[-1]]
    regular = high - low <= max(1.0, 0.25 * median) and span.mean() <= 0.5
    return float(median) if regular else 1.0


def upscale_factor(gray: np.ndarray) -> float:
    """Estimates by how much a small image was enlarged: about k for a k-times nearest-neighbour or
    bilinear enlargement of `gray` (H, W), 1 for an image at its own resolution.

    Nearest-neighbour filtering changes values only between its blocks, bilinear filtering changes
    slopes only at the source pixels: the lines (columns, rows) where either happens anywhere in
    the image are spaced k apart; in an image at its own resolution (or with noise) every line has them.
    """
    factors = []
    for axis in (0, 1):
        other = 1 - axis
        values = np.abs(np.diff(gray, axis=axis)) > QUANTUM
        slopes = np.abs(np.diff(gray, n=2, axis=axis)) > 2 * QUANTUM  # rounding to 8 bits moves slopes by <= 2
        factors.append(max(_change_spacing(values.any(axis=other)), _change_spacing(slopes.any(axis=other))))
    return min(factors)


def restore_resolution(gray: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Returns `gray` (H, W) as a smooth image to threshold: an enlarged coarse image (blocky or bilinear)
    is shrunk to the resolution it was drawn at and enlarged again with bicubic filtering, and an image
    under `min_side` px a side is enlarged (bicubic) to it; others come back unchanged."""
    height, width = gray.shape
    factor = upscale_factor(gray)
    small = max(height, width) < min_side
    if factor < 2 and not small:
        return gray
    image = Image.fromarray(gray.astype(np.float32))
    if factor >= 2:
        native = image.resize((max(1, round(width / factor)), max(1, round(height / factor))), Image.Resampling.BOX)
        image = native.resize((width, height), Image.Resampling.BICUBIC)
    if small:
        scale = min_side / max(height, width)
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image), 0.0, 1.0)


def sheet_mask(gray: np.ndarray) -> np.ndarray | None:
    """Finds the sheet in a photo that shows what lies around it (a desk, a table's edge): bool (H, W),
    the sheet with the digit, or None when the whole image is the sheet (or no sheet stands out).

    On a copy shrunk to SHEET_GRID px and lightly smoothed, split in two by Otsu's threshold, the sheet
    is the larger class's largest component, its holes filled. It must cover SHEET_SHARE of the image,
    be nearly a rectangle at some angle (SHEET_RECTANGULARITY: a page, seen at a slant too, not the
    paper between a marker digit's strokes nor a marker digit's blob), hold the digit (some of the
    other class lies in its holes, in strokes thin beside the paper's depth: SHEET_STROKES), and leave
    surroundings of the other class outside its outline (SURROUNDINGS_INSIDE: not a digit's stroke that
    reaches the image's border) and SURROUNDINGS_DEPTH deep at that border (ruled lines and form cells
    are thinner), contrasting with it beyond noise and MIN_CONTRAST, across an edge that keeps
    SHEET_EDGE of that contrast within a few pixels (light falling off across a page, or a soft
    shadow, changes slowly).
    """
    height, width = gray.shape
    scale = min(1.0, SHEET_GRID / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = ndimage.gaussian_filter(
        np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX)), 1.0)
    dark = small < otsu_threshold(small)
    shorter, least_contrast = min(small.shape), max(NOISE_SIGMAS * noise_sigma(gray), MIN_CONTRAST)
    for cls in sorted((dark, ~dark), key=lambda mask: -int(mask.sum())):
        labels, count = ndimage.label(cls)
        if count == 0:
            continue
        largest = labels == 1 + int(np.argmax(ndimage.sum_labels(cls, labels, range(1, count + 1))))
        sheet = ndimage.binary_fill_holes(largest)
        digit, around = sheet & ~cls, ~sheet & ~cls
        if largest.mean() < SHEET_SHARE or not digit.any() or rectangularity(sheet) < SHEET_RECTANGULARITY:
            continue
        if (around & convex_hull(sheet)).sum() > SURROUNDINGS_INSIDE * around.sum():  # ink reaching the border
            continue
        if (ndimage.distance_transform_edt(digit)[digit].mean()
                > SHEET_STROKES * ndimage.distance_transform_edt(largest)[largest].mean()
                or border(ndimage.distance_transform_edt(around)).max() < max(2.0, SURROUNDINGS_DEPTH * shorter)):
            continue
        inner = largest & ndimage.binary_dilation(around, iterations=3)
        outer = around & ndimage.binary_dilation(largest, iterations=3)
        contrast = abs(float(np.median(small[largest])) - float(np.median(small[around])))
        step = abs(float(np.median(small[inner])) - float(np.median(small[outer]))) if inner.any() else 0.0
        if contrast < least_contrast or step < SHEET_EDGE * contrast:
            continue
        full = Image.fromarray(sheet.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(full) > 0.5
    return None


def _hull_corners(mask: np.ndarray) -> np.ndarray | None:
    """The (row, col) corners (K, 2) of the convex hull of bool `mask`'s pixels; None when they lie on a line."""
    points = np.argwhere(mask).astype(np.float64)
    if len(points) < 3 or np.linalg.matrix_rank(points - points[0]) < 2:
        return None
    return points[spatial.ConvexHull(points).vertices]


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels inside the convex hull of bool `mask` (H, W) (`mask` itself when flat)."""
    corners = _hull_corners(mask)
    if corners is None:
        return mask
    inside = spatial.Delaunay(corners).find_simplex(np.indices(mask.shape).reshape(2, -1).T) >= 0
    return inside.reshape(mask.shape)


def rectangularity(mask: np.ndarray) -> float:
    """The share of its smallest enclosing rectangle, at any angle, that bool `mask` (H, W) covers: 1 for a
    rectangle, about 0.79 for an ellipse. That rectangle has a side along one of the convex hull's edges."""
    hull = _hull_corners(mask)
    if hull is None:
        return 1.0
    angles = np.arctan2(*np.diff(np.vstack([hull, hull[:1]]), axis=0).T)  # each edge's, from its (dy, dx)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    along, across = hull[:, 0] * cos - hull[:, 1] * sin, hull[:, 0] * sin + hull[:, 1] * cos  # (edges, vertices)
    areas = (np.ptp(along, axis=1) + 1) * (np.ptp(across, axis=1) + 1)  # + 1: pixels, not their centres
    return min(1.0, int(mask.sum()) / float(areas.min()))


def without_surroundings(gray: np.ndarray) -> np.ndarray:
    """Returns `gray` (H, W) cropped to the sheet `sheet_mask` finds, whatever of the surroundings is
    left in that box painted with the nearest of the sheet's pixels (a few pixels in from its edge,
    which blends into the desk); `gray` itself when there are no surroundings."""
    sheet = sheet_mask(gray)
    if sheet is None:
        return gray
    rows, cols = np.flatnonzero(sheet.any(axis=1)), np.flatnonzero(sheet.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    gray, sheet = gray[box], sheet[box]
    inside = ndimage.binary_erosion(sheet, iterations=max(2, round(0.01 * max(gray.shape))))
    if not inside.any():
        return gray
    nearest = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    return np.where(inside, gray, gray[nearest[0], nearest[1]])


def _run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """int (H, W): for each pixel of `mask`, the length of the run of mask pixels it lies in along `axis`."""
    structure = np.zeros((3, 3), bool)
    structure[:, 1] = True
    labels, _ = ndimage.label(mask, structure=structure if axis == 0 else structure.T)
    return np.bincount(labels.ravel())[labels] * mask


def _long_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """The pixels of `mask` (H, W) in horizontal runs of at least `length`, allowing a 1-px step up or down."""
    step = np.ones((3, 1), bool)
    long = _run_lengths(ndimage.binary_dilation(mask, structure=step), axis=1) >= length
    return mask & ndimage.binary_dilation(long, structure=step)


def ruled_lines(mask: np.ndarray, span: float = LINE_SPAN, thinness: float = LINE_THINNESS,
                relative_width: float = LINE_WIDTH) -> np.ndarray:
    """Returns bool (H, W): the ruled lines in the ink `mask` (H, W), such as a form cell's printed box.

    A ruled line is a straight horizontal or vertical run of ink across at least `span` of the
    image whose ink is thinner across it than `thinness` times the other ink's stroke width and
    than `relative_width` of the image's longer side (a digit's own bar, even one reaching across
    the frame, or the straight edge of a thick stroke, is as thick as its strokes). Where a stroke
    crosses a line, the crossing is kept in the digit.
    """
    found = [_long_runs(mask, max(2, round(span * mask.shape[1]))),
             _long_runs(mask.T, max(2, round(span * mask.shape[0]))).T]  # horizontal, vertical
    if not (found[0].any() or found[1].any()):
        return np.zeros_like(mask)
    limit = min(thinness * stroke_width(mask & ~(found[0] | found[1])), relative_width * max(mask.shape))
    lines = np.zeros_like(mask)
    for axis, candidates in enumerate(found):  # axis 0: horizontal lines, whose thickness runs down the columns
        across = _run_lengths(mask, axis)
        labels, _ = ndimage.label(candidates, structure=np.ones((3, 3)))
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            line = labels[box] == index
            along = line.sum(axis=1 - axis, keepdims=True)  # the line's length in each of its rows (columns)
            line &= along >= 0.6 * along.max()  # not the rows of a stroke that only touches it
            if np.percentile(across[box][line], 25) < limit:  # skips strokes crossing or touching it
                lines[box] |= line
    if lines.any():  # strokes crossing a line continue on both sides of it: keep the crossings
        rest = np.pad(mask & ~lines, LINE_CROSSING)
        crossings = [ndimage.binary_closing(rest, structure=np.ones(shape, bool))
                     for shape in ((LINE_CROSSING, 1), (1, LINE_CROSSING))]
        inner = (slice(LINE_CROSSING, -LINE_CROSSING),) * 2
        lines &= ~((found[0] & crossings[0][inner]) | (found[1] & crossings[1][inner]))
    return lines


def border(image: np.ndarray) -> np.ndarray:
    """The pixels of the image's outermost frame (2H + 2W values; corners twice)."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def split_ink(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Finds the ink of a digit that reaches the image's border; returns it as bool (H, W), and whether
    it is darker than the paper. `gray` (H, W) is split in two by Otsu's threshold, and the ink is the
    class that covers less of the border (paper frames a digit; even a marker digit filling its
    frame leaves most of the border to the paper)."""
    dark = gray < otsu_threshold(gray)
    is_dark = float(border(dark).mean()) <= 0.5
    return (dark if is_dark else ~dark), is_dark


def to_ink(gray: np.ndarray) -> np.ndarray:
    """Returns an ink map (H, W) in [0, 1]: paper 0, typical stroke 1, whatever the polarity and light.

    The background surface is subtracted; the ink's sign is that of the residuals standing out
    beyond NOISE_SIGMAS noise sigmas (noise is two-sided, ink one-sided). When over BORDER_INK of
    the border stands out from that surface, ink reaches the border and the surface is not the
    paper's: the ink is then found by `split_ink` and the surface is refitted to the paper alone.
    An image whose ink is weaker than MIN_CONTRAST gives all zeros.
    """
    threshold = max(NOISE_SIGMAS * noise_sigma(gray), MIN_CONTRAST)
    residual = gray - estimate_background(gray)
    strong = np.abs(residual) > threshold
    if float(border(strong).mean()) > BORDER_INK:
        ink, is_dark = split_ink(gray)
        residual = gray - estimate_background(gray, ~ink)
        strong = np.abs(residual) > threshold
        sign = -1.0 if is_dark else 1.0
    else:
        sign = 1.0 if residual[strong].sum() > 0 else -1.0
    if not strong.any():
        return np.zeros_like(gray, dtype=np.float32)
    ink = sign * residual
    strokes = strong & (ink > 0)
    stroke = float(np.percentile(ink[strokes], 90)) if strokes.any() else 0.0  # the typical stroke's strength
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
    """Returns bool (H, W): where `ink` (from `to_ink`) is the digit, by Otsu's threshold with hysteresis.

    The threshold is taken on the ink lightly smoothed (so isolated noisy pixels stay below it)
    and kept within [0.2, 0.6] of the stroke level. Fainter ink joined to that mask is kept too,
    down to HAIRLINE of the threshold and above the ink map's noise: the hairlines of a pen or a
    calligraphic face, which smoothing dims below the threshold, stay part of the digit.
    """
    smooth = ndimage.gaussian_filter(ink, 1.0)
    threshold = np.clip(otsu_threshold(smooth), 0.2, 0.6)
    strong = smooth > threshold
    faint = ink > max(HAIRLINE * threshold, NOISE_SIGMAS * noise_sigma(ink))
    return ndimage.binary_propagation(strong, structure=np.ones((3, 3)), mask=strong | faint)


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
    Raises NoInk when the mask is empty (a blank image).
    """
    if not mask.any():
        raise NoInk("no ink found: the image looks blank")
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


def normalise_strokes(ink: np.ndarray, scale: float = DETAIL, low: float = STROKE_LOW,
                      target: float = STROKE_TARGET, high: float = STROKE_HIGH,
                      thick_target: float = STROKE_THICK_TARGET, max_softness: float = SOFT_EDGES) -> np.ndarray:
    """Returns ink (h', w') whose strokes are MNIST-like: a fine pen's lines widened, a marker's thinned.

    `ink` (h, w) is a digit `scale` times larger than the 20-px box; widths are judged in box
    pixels. Strokes narrower than `low` are dilated (grey morphology, disc footprint; the canvas
    grows by the radius) to `target`; strokes wider than `high` are eroded to `thick_target`, at
    the wide end of MNIST's range (eroding to its median cost accuracy on marker digits), unless
    their edges are soft (wider than `max_softness` from a quarter to three quarters of the
    stroke's strength): a blurred coarse digit's strokes look wide but thin out when resized.
    """
    width = stroke_width(ink > 0.5) / scale
    if width < low:
        radius = round((target - width) * scale / 2)
        return ndimage.grey_dilation(np.pad(ink, radius), footprint=_disc(radius)) if radius > 0 else ink
    if width > high and (stroke_width(ink > 0.25) - stroke_width(ink > 0.75)) / scale < max_softness:
        radius = round((width - thick_target) * scale / 2)
        return ndimage.grey_erosion(ink, footprint=_disc(radius)) if radius > 0 else ink
    return ink


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


def center_box(ink: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Places `ink` (h, w <= size) in a (size, size) canvas with its bounding box centred."""
    height, width = ink.shape
    top, left = (size - height) // 2, (size - width) // 2
    canvas = np.zeros((size, size), np.float32)
    canvas[top : top + height, left : left + width] = ink
    return canvas


def crop_to_mnist(crop: np.ndarray, framing: Framing = DIGIT_FRAMING) -> np.ndarray:
    """Turns an ink crop (h, w) into the data set's form, as `framing` says: uint8 (28, 28, 1)."""
    if framing.strokes:
        crop = normalise_strokes(fit_to_box(crop, DETAIL * framing.box))
    fitted = fit_to_box(crop, framing.box)
    framed = center_by_mass(fitted) if framing.centre == "mass" else center_box(fitted)
    return np.round(framed * 255).astype(np.uint8)[:, :, None]


def digit_ink(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns the ink map (H', W') and the mask of the digits' ink in greyscale (H, W), at the working
    resolution (see `restore_resolution`) and cropped to the sheet in a photo that shows the desk around
    it (see `without_surroundings`), ruled lines and specks removed."""
    ink = to_ink(without_surroundings(restore_resolution(gray)))
    mask = ink_mask(ink)
    lines = ruled_lines(mask)
    if lines.any():
        ink, mask = np.where(lines, 0.0, ink).astype(np.float32), mask & ~lines
    return ink, remove_specks(mask)


def find_digit(gray: np.ndarray) -> np.ndarray:
    """Returns the ink crop (h, w) of the one digit in greyscale (H, W); raises NoInk if there is none."""
    return crop_to_mask(*digit_ink(gray))


def to_mnist(gray: np.ndarray, framing: Framing = DIGIT_FRAMING) -> np.ndarray:
    """Runs the whole pipeline on greyscale (H, W) in [0, 1]; returns uint8 (28, 28, 1)."""
    return crop_to_mnist(find_digit(gray), framing)
