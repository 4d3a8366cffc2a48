"""MNIST test digits and font digits rendered the way users' image files look, for evaluation.

Every renderer takes a numpy Generator (all randomness comes from it, so a seed reproduces the
images) and returns the encoded bytes of an image file, as a user would hand to bin/predict.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

# Debian packages of handwriting-style fonts (apt-get install ...); those installed are used.
HANDWRITING_FONT_PACKAGES = (
    "fonts-dkg-handwriting", "fonts-humor-sans", "fonts-comic-neue", "fonts-breip", "fonts-femkeklaver",
    "fonts-kristi", "fonts-dancingscript", "fonts-kaushanscript", "fonts-rufscript", "fonts-bwht",
    "fonts-ecolier-court",
)
FONT_DIRS = ("fifthhorseman", "humor-sans", "comic-neue", "breip", "femkeklaver", "kristi", "dancingscript",
             "kaushanscript", "rufscript", "bwht", "ecolier-court")  # under /usr/share/fonts/{truetype,opentype}


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    """Returns `image` encoded as a file of `format` (PNG, JPEG, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def pen_coverage(digit: np.ndarray, scale: float, pen: float | None = None) -> np.ndarray:
    """Redraws a 28x28 uint8 MNIST digit `scale` times larger as a pen stroke: coverage (H, W) in [0, 1].

    pen: the stroke width in MNIST pixels (MNIST's own median is 2.6), or None to keep the
    digit's own strokes. A thinner pen follows the strokes' centre lines. Edges are
    anti-aliased over about one pixel, like a scan.
    """
    side = max(8, round(28 * scale))
    up = np.asarray(Image.fromarray(digit.astype(np.float32) / 255).resize((side, side), Image.Resampling.BICUBIC))
    inside = up > 0.5
    own = _half_width(inside)
    if pen is None or pen * scale / 2 == own:
        return np.clip(up * 2 - 0.5, 0.0, 1.0)
    if pen * scale / 2 > own:
        return np.clip(pen * scale / 2 - own + 0.5 - ndimage.distance_transform_edt(~inside), 0.0, 1.0)
    depth = ndimage.distance_transform_edt(inside)
    ridge = inside & (depth >= ndimage.maximum_filter(depth, size=3) - 0.75)  # the strokes' centre lines
    return np.clip(pen * scale / 2 + 0.5 - ndimage.distance_transform_edt(~ridge), 0.0, 1.0)


def _half_width(mask: np.ndarray) -> float:
    """Half the mean stroke width of `mask`, in pixels (see preprocess.stroke_width)."""
    return 2.0 * (float(ndimage.distance_transform_edt(mask)[mask].mean()) - 0.5) if mask.any() else 1.0


def rotate(page: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates a page (H, W) about its centre, same size; the corners show more of the same paper."""
    return ndimage.rotate(page, degrees, reshape=False, order=1, mode="nearest")


def place(coverage: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Pastes coverage (h, w) at a random position of a zero canvas (H, W) >= (h, w)."""
    out = np.zeros(canvas, np.float32)
    top = int(rng.integers(0, canvas[0] - coverage.shape[0] + 1))
    left = int(rng.integers(0, canvas[1] - coverage.shape[1] + 1))
    out[top : top + coverage.shape[0], left : left + coverage.shape[1]] = coverage
    return out


def random_canvas(coverage: np.ndarray, rng: np.random.Generator, low: float = 1.2, high: float = 2.5) -> np.ndarray:
    """Places coverage in a canvas `low`-`high` times its size per side, random aspect and position."""
    height, width = coverage.shape
    shape = (round(height * rng.uniform(low, high)), round(width * rng.uniform(low, high)))
    return place(coverage, shape, rng)


def on_paper(coverage: np.ndarray, paper: float, ink: float) -> np.ndarray:
    """Returns the greyscale page (H, W) in [0, 1]: `paper` shade where coverage is 0, `ink` where 1."""
    return paper + (ink - paper) * coverage


def to_image(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))


def lighting(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A phone photo's uneven light (H, W): a linear falloff in a random direction, vignette, soft shadow."""
    height, width = shape
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y + 1.414) / 2.828  # 0..1 across the image
    light = 1.0 - rng.uniform(0.3, 0.55) * ramp - rng.uniform(0.05, 0.2) * (x * x + y * y) / 2
    shadow_edge = rng.uniform(-0.8, 0.8)
    shadow = 1.0 - rng.uniform(0.1, 0.25) / (1 + np.exp(-(x - shadow_edge) * 6))
    return (light * shadow).astype(np.float32)


def _paper_and_ink(rng: np.random.Generator) -> tuple[float, float]:
    return rng.uniform(0.72, 0.97), rng.uniform(0.02, 0.3)


def render_mnist(digit, rng):
    """MNIST's own 28x28 image, white on black: the control."""
    return encode(Image.fromarray(digit))


def render_paper(digit, rng):
    """Dark ink on light paper, 3-8x MNIST's size, anywhere on a larger sheet."""
    return encode(to_image(on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 8)), rng), *_paper_and_ink(rng))))


def render_chalkboard(digit, rng):
    """Light chalk or ink on a dark board."""
    page = on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 8)), rng), rng.uniform(0.05, 0.3),
                    rng.uniform(0.75, 1.0))
    return encode(to_image(page))


def render_thin_pen(digit, rng):
    """A fine pen: strokes 0.6-1.2 MNIST pixels wide (MNIST's median: 2.6)."""
    coverage = pen_coverage(digit, rng.uniform(6, 10), pen=rng.uniform(0.6, 1.2))
    return encode(to_image(on_paper(random_canvas(coverage, rng), *_paper_and_ink(rng))))


def render_thick_pen(digit, rng):
    """A marker: strokes 4-5.5 MNIST pixels wide (MNIST's 99th percentile: 4.5)."""
    coverage = pen_coverage(digit, rng.uniform(4, 8), pen=rng.uniform(4.0, 5.5))
    return encode(to_image(on_paper(random_canvas(coverage, rng, 1.3, 2.5), *_paper_and_ink(rng))))


def render_small(digit, rng):
    """A small digit (about 25-45 px) somewhere on a large page (300-700 px)."""
    coverage = pen_coverage(digit, rng.uniform(0.9, 1.6))
    shape = (int(rng.integers(300, 700)), int(rng.integers(300, 700)))
    return encode(to_image(on_paper(place(coverage, shape, rng), *_paper_and_ink(rng))))


def render_fills_frame(digit, rng):
    """The digit fills the image: cropped to its ink with a margin of 0-3 px."""
    coverage = pen_coverage(digit, rng.uniform(3, 6))
    rows, cols = np.flatnonzero(coverage.max(axis=1) > 0), np.flatnonzero(coverage.max(axis=0) > 0)
    margin = int(rng.integers(0, 4))
    tight = np.pad(coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], margin)
    return encode(to_image(on_paper(tight, *_paper_and_ink(rng))))


def render_blur(digit, rng):
    """Out of focus: Gaussian blur of 1-2 MNIST pixels."""
    scale = rng.uniform(3, 6)
    page = on_paper(random_canvas(pen_coverage(digit, scale), rng), *_paper_and_ink(rng))
    return encode(to_image(ndimage.gaussian_filter(page, rng.uniform(1.0, 2.0) * scale / 2)))


def render_noise(digit, rng):
    """Sensor noise (sd 0.04-0.1), salt-and-pepper pixels and a few dust specks."""
    page = on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 7)), rng), *_paper_and_ink(rng))
    page = page + rng.normal(0, rng.uniform(0.04, 0.1), page.shape)
    salt = rng.random(page.shape)
    page[salt < 0.002] = 0.0
    page[salt > 0.998] = 1.0
    for _ in range(int(rng.integers(1, 5))):  # dust: small dark blobs
        y, x = int(rng.integers(0, page.shape[0])), int(rng.integers(0, page.shape[1]))
        radius = int(rng.integers(1, 3))
        page[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] *= 0.3
    return encode(to_image(page))


def render_uneven_light(digit, rng):
    """A phone photo under a lamp: light falling off across the page, a vignette and a soft shadow."""
    page = on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 7)), rng, 1.5, 3.0), *_paper_and_ink(rng))
    return encode(to_image(page * lighting(page.shape, rng)))


def render_jpeg(digit, rng):
    """Heavy JPEG compression (quality 10-35)."""
    page = on_paper(random_canvas(pen_coverage(digit, rng.uniform(2, 5)), rng), *_paper_and_ink(rng))
    return encode(to_image(page), "JPEG", quality=int(rng.integers(10, 36)))


def render_rotated(digit, rng):
    """The page photographed a little askew: rotated by up to 12 degrees either way."""
    page = on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 7)), rng, 1.5, 2.5), *_paper_and_ink(rng))
    return encode(to_image(rotate(page, rng.uniform(-12, 12))))


def render_colour(digit, rng):
    """Coloured ink on coloured paper (RGB): a blue, red, green or black pen on a sticky note."""
    coverage = random_canvas(pen_coverage(digit, rng.uniform(3, 7)), rng)[..., None]
    paper = rng.uniform([0.85, 0.8, 0.4], [1.0, 1.0, 1.0])
    ink = rng.choice(np.array([[0.1, 0.15, 0.6], [0.7, 0.1, 0.1], [0.1, 0.45, 0.15], [0.1, 0.1, 0.1]]))
    rgb = paper + (ink - paper) * coverage
    return encode(Image.fromarray(np.round(rgb * 255).astype(np.uint8)))


def render_transparent(digit, rng):
    """A paint-program drawing: opaque ink of any shade on a transparent canvas (RGBA PNG)."""
    coverage = random_canvas(pen_coverage(digit, rng.uniform(3, 7)), rng)
    shade = 255 if rng.random() < 0.5 else 0
    rgba = np.zeros((*coverage.shape, 4), np.uint8)
    rgba[..., :3] = shade
    rgba[..., 3] = np.round(coverage * 255)
    return encode(Image.fromarray(rgba))


def render_exif_rotated(digit, rng):
    """A phone JPEG stored sideways with an EXIF orientation tag saying how to turn it upright."""
    page = to_image(on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 6)), rng), *_paper_and_ink(rng)))
    orientation, stored = [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                           (3, Image.Transpose.ROTATE_180)][int(rng.integers(0, 3))]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(page.transpose(stored), "JPEG", quality=90, exif=exif)


def render_phone_photo(digit, rng):
    """All at once, mildly: a photo of a page with uneven light, blur, noise, a tilt and JPEG."""
    scale = rng.uniform(3, 6)
    page = on_paper(random_canvas(pen_coverage(digit, scale, pen=rng.uniform(1.5, 3.5)), rng, 1.5, 3.0),
                    *_paper_and_ink(rng))
    page = rotate(page, rng.uniform(-6, 6)) * lighting(page.shape, rng)
    page = ndimage.gaussian_filter(page, rng.uniform(0.3, 1.0) * scale / 2)
    page = page + rng.normal(0, rng.uniform(0.01, 0.04), page.shape)
    return encode(to_image(page), "JPEG", quality=int(rng.integers(40, 80)))


def render_desk(digit, rng):
    """A phone photo of the page lying on a desk: the desk (darker, grained) showing beyond one to four of
    the page's edges, 8-30% of its size on each, the page turned by up to 8 degrees, uneven light, JPEG."""
    page = on_paper(random_canvas(pen_coverage(digit, rng.uniform(3, 6)), rng, 2.0, 3.0), *_paper_and_ink(rng))
    height, width = page.shape
    margins = np.round(rng.uniform(0.08, 0.3, size=4) * [height, height, width, width]).astype(int)
    margins[rng.choice(4, size=int(rng.integers(0, 4)), replace=False)] = 0  # top, bottom, left, right
    shape = (height + margins[0] + margins[1], width + margins[2] + margins[3])
    inside = (slice(margins[0], margins[0] + height), slice(margins[2], margins[2] + width))
    sheet, placed = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    sheet[inside], placed[inside] = 1.0, page
    angle = rng.uniform(-8, 8)
    sheet, placed = (ndimage.rotate(a, angle, reshape=False, order=1, mode="nearest") for a in (sheet, placed))
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    grain = np.sin(x / rng.uniform(3, 9) + y / rng.uniform(20, 60) + rng.uniform(0, 2 * np.pi))
    desk = rng.uniform(0.1, 0.5) + 0.05 * grain + rng.normal(0, 0.02, shape)
    photo = (sheet * placed + (1 - sheet) * desk) * lighting(shape, rng)
    return encode(to_image(photo), "JPEG", quality=int(rng.integers(60, 91)))


def _upscale(image: Image.Image, side: int, nearest: bool) -> Image.Image:
    """Enlarges `image` so its longer side is `side`, with nearest-neighbour or bilinear filtering."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)


def _polarity(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Returns the page (H, W) or its negative, each half the time: a clean drawing of either shade."""
    return 1.0 - page if rng.random() < 0.5 else page


def render_coarse(pixels: int):
    """Returns a renderer: the digit shrunk to `pixels` a side, then enlarged to 48-128 px (half of the
    files by nearest-neighbour, half by bilinear filtering), dark on clean white: a low-resolution scan."""
    def render(digit, rng):
        gray = to_image(on_paper(digit.astype(np.float32) / 255, rng.uniform(0.9, 1.0), rng.uniform(0.0, 0.2)))
        small = gray.resize((pixels, pixels), Image.Resampling.BOX)
        return encode(_upscale(small, int(rng.integers(48, 129)), nearest=rng.random() < 0.5))

    render.__doc__ = f"A {pixels}x{pixels} digit enlarged to 48-128 px, half nearest, half bilinear."
    return render


def render_two_level(digit, rng):
    """Binarised: two grey levels and no anti-aliasing, either shade of ink, 3-8x MNIST's size."""
    coverage = random_canvas((pen_coverage(digit, rng.uniform(3, 8)) > 0.5).astype(np.float32), rng)
    return encode(to_image(_polarity(on_paper(coverage, 1.0, 0.0), rng)))


def render_thick_frame(digit, rng):
    """A marker digit filling its frame: strokes 4-8 MNIST px wide, clean flat background, either shade,
    the ink touching at least two of the image's borders (the others 0-6 px away)."""
    coverage = pen_coverage(digit, rng.uniform(3, 6), pen=rng.uniform(4.0, 8.0))
    rows, cols = np.flatnonzero(coverage.max(axis=1) > 0.5), np.flatnonzero(coverage.max(axis=0) > 0.5)
    tight = coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    margins = rng.integers(0, 7, size=4)
    margins[rng.choice(4, size=int(rng.integers(2, 5)), replace=False)] = 0  # top, bottom, left, right
    framed = np.pad(tight, ((margins[0], margins[1]), (margins[2], margins[3])))
    paper, ink = _paper_and_ink(rng)
    return encode(to_image(_polarity(on_paper(framed, paper, ink), rng)))


def render_form_cell(digit, rng):
    """A digit written in a printed form's cell: straight lines 1-3 px wide on two to four sides of it,
    from touching the digit to 8 px away, crossing the whole image (a cell cut out of a form)."""
    coverage = pen_coverage(digit, rng.uniform(2.5, 5))
    rows, cols = np.flatnonzero(coverage.max(axis=1) > 0.5), np.flatnonzero(coverage.max(axis=0) > 0.5)
    tight = coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    outside = rng.integers(2, 10, size=4)  # paper beyond each line, to the image's border
    gaps = rng.integers(-1, 9, size=4).clip(0)  # from the ink's edge to the line (0, a fifth of them: touching)
    widths = rng.integers(1, 4, size=4)
    sides = rng.choice(4, size=int(rng.integers(2, 5)), replace=False)
    pads = gaps + widths + outside
    page = np.pad(tight, ((pads[0], pads[1]), (pads[2], pads[3])))
    lines = np.zeros_like(page)
    height, width = page.shape
    for side in sides:
        start = outside[side] if side in (0, 2) else (height if side == 1 else width) - outside[side] - widths[side]
        band = slice(start, start + widths[side])
        lines[(band, slice(None)) if side < 2 else (slice(None), band)] = 1.0
    paper, ink = _paper_and_ink(rng)
    shade = rng.uniform(0.0, 0.5)  # printed lines: black to mid grey, independent of the pen
    page = on_paper(page, paper, ink)
    return encode(to_image(np.where(lines > 0, np.minimum(page, shade), page)))


CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "mnist": render_mnist, "paper": render_paper, "chalkboard": render_chalkboard,
    "thin-pen": render_thin_pen, "thick-pen": render_thick_pen, "small-in-large": render_small,
    "fills-frame": render_fills_frame, "blur": render_blur, "noise": render_noise,
    "uneven-light": render_uneven_light, "jpeg": render_jpeg, "rotated": render_rotated,
    "colour": render_colour, "transparent": render_transparent, "exif-rotated": render_exif_rotated,
    "phone-photo": render_phone_photo, "coarse-8": render_coarse(8), "coarse-12": render_coarse(12),
    "coarse-16": render_coarse(16), "two-level": render_two_level, "thick-frame": render_thick_frame,
    "form-cell": render_form_cell, "desk": render_desk,
}


def item_coverage(item: np.ndarray, scale: float) -> np.ndarray:
    """Enlarges a 28x28 uint8 Fashion-MNIST item `scale` times (bicubic): its shade (H, W) in [0, 1]."""
    side = max(28, round(28 * scale))
    up = Image.fromarray(item.astype(np.float32) / 255).resize((side, side), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up), 0.0, 1.0)


def render_item(item, rng):
    """The data set's own 28x28 image, light on black: the control."""
    return encode(Image.fromarray(item))


def render_catalogue_photo(item, rng):
    """A product shot: the item dark on a light backdrop (as Fashion-MNIST's photos were before it negated
    them), 4-12x its size, off-centre with a margin, under uneven light, with sensor noise and JPEG."""
    backdrop = rng.uniform(0.8, 0.97)
    page = on_paper(random_canvas(item_coverage(item, rng.uniform(4, 12)), rng, 1.1, 1.8), backdrop,
                    rng.uniform(0.0, 0.15))
    page = page * lighting(page.shape, rng) ** 0.5  # studio light: milder than a phone's at a desk
    page = page + rng.normal(0, rng.uniform(0.005, 0.02), page.shape)
    return encode(to_image(page), "JPEG", quality=int(rng.integers(60, 90)))


def render_on_dark(item, rng):
    """The item light on a dark cloth, 3-8x its size, somewhere in a larger frame, a little blurred."""
    page = on_paper(random_canvas(item_coverage(item, rng.uniform(3, 8)), rng, 1.2, 2.0), rng.uniform(0.0, 0.15),
                    rng.uniform(0.85, 1.0))
    return encode(to_image(ndimage.gaussian_filter(page, rng.uniform(0.3, 1.5))))


def render_item_drawing(item, rng):
    """The item's outline drawn with a pen on paper: its silhouette's edge, 4-8x its size."""
    scale = rng.uniform(4, 8)
    inside = item_coverage(item, scale) > 0.1
    edge = inside & ~ndimage.binary_erosion(inside, iterations=max(1, round(scale / 2)))
    return encode(to_image(on_paper(random_canvas(edge.astype(np.float32), rng), *_paper_and_ink(rng))))


# The renders of a data set of items (Fashion-MNIST): photos and drawings of a garment, not pen strokes.
ITEM_CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "item": render_item, "catalogue-photo": render_catalogue_photo, "on-dark": render_on_dark,
    "outline-drawing": render_item_drawing,
}


def find_fonts(roots: tuple[str, ...] = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype")) -> list[Path]:
    """Returns the installed handwriting-style font files (see HANDWRITING_FONT_PACKAGES), sorted."""
    return sorted(path for root in roots for name in FONT_DIRS for path in Path(root, name).glob("*.[ot]tf"))


def render_font_digit(font_path: Path, digit: int, rng: np.random.Generator) -> bytes:
    """Draws `digit` in the font at 60-160 px, slightly tilted, dark on light paper."""
    font = ImageFont.truetype(str(font_path), int(rng.integers(60, 160)))
    left, top, right, bottom = font.getbbox(str(digit))
    glyph = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(glyph).text((4 - left, 4 - top), str(digit), fill=255, font=font)
    glyph = glyph.rotate(rng.uniform(-6, 6), Image.Resampling.BICUBIC, expand=True)
    coverage = random_canvas(np.asarray(glyph, np.float32) / 255, rng)
    return encode(to_image(on_paper(coverage, *_paper_and_ink(rng))))


def render_scan(pixels: np.ndarray, nearest: bool, side: int = 64) -> bytes:
    """Writes a small scanned digit `pixels` (h, w), ink 1 and paper 0 (any scale), as dark ink on white
    enlarged to `side` px by nearest-neighbour or bilinear filtering: how users keep such scans (PNG)."""
    gray = 1.0 - pixels.astype(np.float32) / max(float(pixels.max()), 1e-6)
    return encode(_upscale(to_image(gray), side, nearest))
