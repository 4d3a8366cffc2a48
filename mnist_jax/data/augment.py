"""Random affine and elastic distortions of digit images, pure JAX and jittable (runs on the device).

Each image gets its own transform: a random affine map (rotation, zoom, shear, shift about the
image centre) plus, optionally, an elastic distortion (Simard et al. 2003: a uniform random
displacement field smoothed by a Gaussian of std sigma and scaled by alpha). Both only move the
sampling grid, so an image is resampled once (bilinear, zero outside the image). With every
strength 0 the grid is the identity and the output equals the input bit for bit.

After the geometric transforms, `degrade` lowers each image's quality as users' files lose it:
a coarse scan (shrunk and enlarged again), blur, a thicker pen. At strength 0 each is
skipped, so a config without them gives the same images as before they existed.

Coordinates are (row, column) = (y down, x right); a positive rotation turns the digit
counter-clockwise as displayed, a positive shear moves lower rows to the right.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from mnist_jax.config import AugmentConfig


def identity_grid(height: int, width: int) -> jax.Array:
    """Returns the (row, column) coordinates of every pixel, float32 (2, height, width)."""
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                              indexing="ij")
    return jnp.stack([rows, cols])


def affine_grid(grid: jax.Array, rotation: jax.Array, scale: jax.Array, shear: jax.Array,
                shift: jax.Array) -> jax.Array:
    """Returns where each output pixel reads the input, for the forward map below; (2, H, W).

    The forward map takes an input point p to centre + R(rotation) Sh(shear) S(scale) (p - centre)
    + shift, with angles in degrees, scale a zoom factor and shift (2,) = (rows, columns) in
    pixels. The grid (2, H, W) holds output pixel coordinates; the result applies the inverse map.
    """
    centre = jnp.array([(grid.shape[1] - 1) / 2, (grid.shape[2] - 1) / 2], jnp.float32)[:, None, None]
    y, x = grid - centre - shift[:, None, None]
    theta = jnp.deg2rad(rotation)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # Inverse rotation: in (x, y-down) coordinates a counter-clockwise turn is x' = x cos + y sin,
    # y' = -x sin + y cos, so its inverse is x = x' cos - y' sin, y = x' sin + y' cos.
    x, y = x * cos - y * sin, x * sin + y * cos
    x = x - jnp.tan(jnp.deg2rad(shear)) * y  # inverse of the shear x' = x + tan(shear) y
    return jnp.stack([y, x]) / scale + centre


def smooth(field: jax.Array, sigma: float) -> jax.Array:
    """Returns `field` (H, W) convolved with a normalised Gaussian of std `sigma`, zero outside.

    The separable convolution is written as two small matrix products, which works for a
    kernel wider than the image.
    """
    def gaussian_matrix(size):
        offsets = jnp.arange(size, dtype=jnp.float32)
        taps = jnp.exp(-0.5 * ((offsets[:, None] - offsets[None, :]) / sigma) ** 2)
        return taps / jnp.sum(jnp.exp(-0.5 * (jnp.arange(-size + 1, size, dtype=jnp.float32) / sigma) ** 2))

    return gaussian_matrix(field.shape[0]) @ field @ gaussian_matrix(field.shape[1]).T


def elastic_displacement(key: jax.Array, shape: tuple[int, int], alpha: float, sigma: float) -> jax.Array:
    """Returns Simard's displacement field (2, H, W) in pixels: alpha * smooth(uniform(-1, 1), sigma)."""
    noise = jax.random.uniform(key, (2, *shape), minval=-1.0, maxval=1.0)
    return alpha * jax.vmap(smooth, in_axes=(0, None))(noise, sigma)


def resample(image: jax.Array, grid: jax.Array) -> jax.Array:
    """Returns image (H, W, C) read bilinearly at grid (2, H, W) coordinates, 0 outside the image."""
    channels = [map_coordinates(image[..., c], [grid[0], grid[1]], order=1, mode="constant", cval=0.0)
                for c in range(image.shape[-1])]
    return jnp.stack(channels, axis=-1)


def random_grid(key: jax.Array, shape: tuple[int, int], config: AugmentConfig) -> jax.Array:
    """Returns the sampling grid (2, H, W) of one random transform drawn from `config`'s ranges."""
    keys = jax.random.split(key, 5)

    def symmetric(k, limit, size=()):
        return jax.random.uniform(k, size, minval=-limit, maxval=limit)

    grid = affine_grid(
        identity_grid(*shape),
        rotation=symmetric(keys[0], config.rotation),
        scale=1.0 + symmetric(keys[1], config.scale),
        shear=symmetric(keys[2], config.shear),
        shift=symmetric(keys[3], config.translation, (2,)),
    )
    return grid + elastic_displacement(keys[4], shape, config.elastic_alpha, config.elastic_sigma)


COARSE_SIDES = (8, 10, 12, 14, 16, 20)  # a coarse image is drawn at one of these sides, then enlarged to 28


def coarse_matrices(size: int) -> jax.Array:
    """Returns float32 (len(COARSE_SIDES), size, size): per side n, the linear map of one axis that shrinks it to
    n pixels (area-averaged) and enlarges it back bilinearly (`jax.image.resize` applied to the identity)."""
    eye = jnp.eye(size, dtype=jnp.float32)
    return jnp.stack([jax.image.resize(jax.image.resize(eye, (n, size), "linear", antialias=True), (size, size),
                                       "linear") for n in COARSE_SIDES])


def coarsen(image: jax.Array, side: jax.Array) -> jax.Array:
    """Returns image (H, W, C), H == W, shrunk (area-averaged) to COARSE_SIDES[side] pixels a side and enlarged
    back bilinearly: the detail of a low-resolution scan. `side` is a traced index. The resize is separable, so
    it is one matrix on each side of the image (two small products instead of a dozen resizes)."""
    matrix = coarse_matrices(image.shape[0])[side]
    return jnp.einsum("ij,jkc,lk->ilc", matrix, image, matrix)


def blur(image: jax.Array, sigma: jax.Array) -> jax.Array:
    """Returns image (H, W, C) blurred by a Gaussian of std `sigma` pixels (traced; near 0: unchanged)."""
    return jax.vmap(smooth, in_axes=(2, None), out_axes=2)(image, jnp.maximum(sigma, 1e-3))


def thicken(image: jax.Array, apply: jax.Array) -> jax.Array:
    """Returns image (H, W, C) grey-dilated by a 3x3 square (a pen 2 px wider) where `apply` (traced
    bool) holds, else unchanged. Thinner pens need no training: preprocessing widens them."""
    dilated = jax.lax.reduce_window(image, -jnp.inf, jax.lax.max, (3, 3, 1), (1, 1, 1), "SAME")
    return jnp.where(apply, dilated, image)


def degrade(image: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Returns image (H, W, C) with the quality losses `config` asks for, each drawn from `key`, its peak
    brightness kept."""
    keys = jax.random.split(key, 4)
    peak = jnp.max(image)
    if config.coarse:
        side = jax.random.randint(keys[0], (), 0, len(COARSE_SIDES))
        image = jnp.where(jax.random.uniform(keys[1]) < config.coarse, coarsen(image, side), image)
    if config.blur:
        image = blur(image, jax.random.uniform(keys[2], maxval=config.blur))
    if config.stroke:
        image = thicken(image, jax.random.uniform(keys[3]) < config.stroke)
    # The darkest ink stays as dark: preprocessing does the same.
    return image * (peak / jnp.maximum(jnp.max(image), 1e-6))


@functools.partial(jax.jit, static_argnames="config")
def augment(images: jax.Array, key: jax.Array, config: AugmentConfig) -> jax.Array:
    """Returns a random distortion of each image: float32 (B, H, W, C) in, same shape out.

    Every image gets its own transform from `key`; the same key gives the same output.
    `config` is static (hashable): a new config compiles anew, a new key does not.
    """
    def one(image, image_key):
        if config.moves:  # the identity grid would resample every pixel to itself
            image = resample(image, random_grid(image_key, image.shape[:2], config))
        return degrade(image, jax.random.fold_in(image_key, 1), config)  # its own stream: the moves stay as they were

    return jax.vmap(one)(images, jax.random.split(key, images.shape[0]))
