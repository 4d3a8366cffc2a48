"""Augmentation: each transform against a known answer, identity at zero strength, keys, one trace."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_tool
from PIL import Image

from mnist_jax import config as config_lib
from mnist_jax.config import AugmentConfig
from mnist_jax.data.augment import COARSE_SIDES, affine_grid, augment, coarsen, identity_grid, resample, thicken
from mnist_jax.errors import ConfigError

SIZE = 28
CENTRE = (SIZE - 1) / 2  # 13.5: transforms turn about the middle of the image
EVERYTHING = AugmentConfig(rotation=15, scale=0.15, shear=15, translation=3, elastic_alpha=34, elastic_sigma=4)
DEGRADED = dataclasses.replace(EVERYTHING, coarse=0.5, blur=1.0, stroke=0.5)


@pytest.fixture(scope="module")
def digits(mnist):
    """The first 32 real training digits as float32 (32, 28, 28, 1) in [0, 1]."""
    return mnist.train_images[:32].astype(np.float32) / 255.0


def transform(image, rotation=0.0, scale=1.0, shear=0.0, shift=(0.0, 0.0)):
    """Applies one given affine map to a (28, 28) image; returns a numpy (28, 28) image."""
    grid = affine_grid(identity_grid(SIZE, SIZE), jnp.float32(rotation), jnp.float32(scale), jnp.float32(shear),
                       jnp.asarray(shift, jnp.float32))
    return np.asarray(resample(jnp.asarray(image, jnp.float32)[..., None], grid))[..., 0]


def test_zero_strength_is_the_identity_bit_for_bit(digits):
    assert np.array_equal(np.asarray(augment(digits, jax.random.key(0), AugmentConfig())), digits)
    # alpha 0 switches the elastic distortion off whatever its sigma
    no_elastic = AugmentConfig(elastic_alpha=0.0, elastic_sigma=7.0)
    assert not no_elastic.enabled and EVERYTHING.enabled
    assert np.array_equal(np.asarray(augment(digits, jax.random.key(1), no_elastic)), digits)


def test_translation_moves_a_stroke_by_the_shift_and_fills_with_zero():
    image = np.zeros((SIZE, SIZE), np.float32)
    image[6:20, 8] = 1.0  # a vertical stroke in column 8
    image[10, 0:3] = 0.5  # ink at the left border, shifted out of the image
    expected = np.zeros_like(image)
    expected[8:22, 5] = 1.0
    np.testing.assert_array_equal(transform(image, shift=(2, -3)), expected)  # 2 rows down, 3 columns left
    full = transform(np.ones_like(image), shift=(2, -3))
    assert (full[:2] == 0).all() and (full[:, -3:] == 0).all() and (full[2:, :-3] == 1).all()
    half = transform(image, shift=(0, 0.5))  # half a pixel right: bilinear splits the stroke in two
    assert half[10, 8] == pytest.approx(0.5) and half[10, 9] == pytest.approx(0.5) and half[10, 7] == 0


def test_rotation_by_90_degrees_turns_the_image_counter_clockwise():
    rng = np.random.default_rng(0)
    pattern = rng.random((SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(transform(pattern, rotation=90), np.rot90(pattern), atol=1e-5)
    arm = np.zeros((SIZE, SIZE), np.float32)
    arm[14, 16:26] = 1.0  # right of the centre, half a pixel below it
    rows, cols = np.nonzero(transform(arm, rotation=90) > 0.5)
    assert set(cols) == {14} and set(rows) == set(range(2, 12))  # above the centre, half a pixel right


def test_scale_shrinks_a_centred_square_about_the_centre():
    square = np.zeros((SIZE, SIZE), np.float32)
    square[10:18, 10:18] = 1.0  # 8x8, centred on 13.5
    expected = np.zeros_like(square)
    expected[12:16, 12:16] = 1.0
    np.testing.assert_array_equal(transform(square, scale=0.5), expected)
    assert transform(square, scale=2.0).sum() == pytest.approx(4 * square.sum())


def test_shear_shifts_each_row_in_proportion_to_its_height():
    line = np.zeros((SIZE, SIZE), np.float32)
    line[4:24, 10:18] = 1.0  # a thick vertical bar centred on column 13.5
    sheared = transform(line, shear=20)
    for row in range(6, 22):
        centroid = (sheared[row] * np.arange(SIZE)).sum() / sheared[row].sum()
        assert centroid == pytest.approx(CENTRE + np.tan(np.deg2rad(20)) * (row - CENTRE), abs=1e-4)


def test_elastic_distortion_moves_ink_but_roughly_keeps_its_mass(digits):
    elastic = AugmentConfig(elastic_alpha=34, elastic_sigma=4)
    out = np.asarray(augment(digits, jax.random.key(2), elastic))
    assert out.min() >= 0 and out.max() <= 1
    changed = np.abs(out - digits).max(axis=(1, 2, 3))
    assert (changed > 0.2).all()  # every digit is distorted
    # the field stretches some strokes and squeezes others (Simard's alpha 34, sigma 4 changes a
    # digit's ink by ~15% on average) but adds or removes none overall
    mass_ratio = out.sum(axis=(1, 2, 3)) / digits.sum(axis=(1, 2, 3))
    assert abs(mass_ratio.mean() - 1) < 0.06 and np.all(np.abs(mass_ratio - 1) < 0.6), mass_ratio
    stronger = np.asarray(augment(digits, jax.random.key(2), dataclasses.replace(elastic, elastic_alpha=68)))
    assert np.abs(stronger - digits).mean() > np.abs(out - digits).mean()


def test_quality_losses_leave_the_moves_as_they_were(digits):
    moved = np.asarray(augment(digits, jax.random.key(5), EVERYTHING))
    degraded = np.asarray(augment(digits, jax.random.key(5), dataclasses.replace(EVERYTHING, stroke=1.0)))
    thick = np.asarray(thicken(jnp.asarray(moved[0]), jnp.array(True)))
    np.testing.assert_allclose(degraded[0], thick * moved[0].max() / thick.max(), atol=1e-5)


def test_a_coarse_image_holds_only_the_detail_of_its_side(digits):
    for index, side in enumerate(COARSE_SIDES):
        coarse = np.asarray(coarsen(jnp.asarray(digits[0]), jnp.array(index)))[..., 0]
        assert coarse.shape == (SIZE, SIZE)
        spectrum = np.abs(np.fft.fft2(coarse))
        cutoff = side // 2 + 2  # frequencies beyond the small image's Nyquist limit are (nearly) gone
        assert spectrum[cutoff : SIZE - cutoff, :].sum() < 0.1 * spectrum.sum()


def test_pen_changes_and_blur_move_ink_the_expected_way_and_keep_the_peak(digits):
    ink = float((digits > 0.5).sum())
    thick = np.asarray(augment(digits, jax.random.key(0), AugmentConfig(stroke=1.0)))
    assert np.allclose(thick.max(axis=(1, 2, 3)), digits.max(axis=(1, 2, 3)), atol=1e-5)
    areas = (thick > 0.5).sum(axis=(1, 2, 3)) / (digits > 0.5).sum(axis=(1, 2, 3))
    assert (areas > 1.4).all()  # every stroke 2 px wider
    blurred = np.asarray(augment(digits, jax.random.key(0), AugmentConfig(blur=2.0)))
    assert np.allclose(blurred.max(axis=(1, 2, 3)), digits.max(axis=(1, 2, 3)), atol=1e-5)
    edges = [np.abs(np.diff(images, axis=2)).sum() for images in (digits, blurred)]
    assert edges[1] < edges[0] and (blurred > 0.5).sum() != ink


def test_same_key_same_output_and_every_image_its_own_transform(digits):
    first = np.asarray(augment(digits, jax.random.key(3), EVERYTHING))
    assert np.array_equal(first, np.asarray(augment(digits, jax.random.key(3), EVERYTHING)))
    assert not np.allclose(first, np.asarray(augment(digits, jax.random.key(4), EVERYTHING)), atol=1e-3)
    copies = np.repeat(digits[:1], 4, axis=0)
    out = np.asarray(augment(copies, jax.random.key(3), EVERYTHING))
    assert all(not np.allclose(out[0], out[i], atol=1e-3) for i in range(1, 4))


@pytest.mark.parametrize("config", [EVERYTHING, DEGRADED], ids=["moves", "moves-and-losses"])
def test_augment_traces_once_for_new_keys_also_inside_a_jitted_step(digits, config):
    augment(digits, jax.random.key(0), config)
    compiled = augment._cache_size()
    traces = []

    @jax.jit
    def step(images, key):
        traces.append(1)
        return augment(images, jax.random.fold_in(key, 7), config).mean()

    for seed in range(3):
        augment(digits, jax.random.key(seed), config)
        step(digits, jax.random.key(seed))
    assert augment._cache_size() == compiled and len(traces) == 1


def test_augment_config_round_trips_and_takes_command_line_overrides():
    assignments = {"augment.rotation": "12.5", "augment.elastic_alpha": "34", "augment.translation": "2"}
    config = config_lib.override(config_lib.get_preset("default"), assignments)
    default = config_lib.get_preset("default").augment
    assert config.augment == dataclasses.replace(default, rotation=12.5, translation=2.0, elastic_alpha=34.0)
    assert config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(config)))) == config
    assert config_lib.from_dict({"train": {"epochs": 2}}).augment == AugmentConfig()  # older configs: all off


@pytest.mark.parametrize("assignment, message", [
    ({"augment.rotation": "-5"}, "invalid augment.rotation=-5.0: must be degrees in [0, 180]"),
    ({"augment.scale": "1"}, "invalid augment.scale=1.0: must be in [0, 1)"),
    ({"augment.shear": "60"}, "invalid augment.shear=60.0: must be degrees in [0, 45]"),
    ({"augment.translation": "20"}, "invalid augment.translation=20.0: must be pixels in [0, 14]"),
    ({"augment.elastic_alpha": "-1"}, "invalid augment.elastic_alpha=-1.0: must be at least 0"),
    ({"augment.elastic_sigma": "0"}, "invalid augment.elastic_sigma=0.0: must be pixels in (0, 10]"),
    ({"augment.rotation": "lots"}, "invalid augment.rotation=lots: must be a number"),
    ({"augment.coarse": "1.5"}, "invalid augment.coarse=1.5: must be a probability in [0, 1]"),
    ({"augment.blur": "-1"}, "invalid augment.blur=-1.0: must be pixels in [0, 5]"),
    ({"augment.stroke": "2"}, "invalid augment.stroke=2.0: must be a probability in [0, 1]"),
])
def test_bad_augment_strengths_name_the_field_and_the_range(assignment, message):
    with pytest.raises(ConfigError) as error:
        config_lib.override(config_lib.get_preset("default"), assignment)
    assert str(error.value) == message


def test_augment_figure_draws_a_row_per_transform_of_real_digits(data_dir, tmp_path):
    out = tmp_path / "augment.png"
    result = run_tool("augment_figure", "--out", str(out), "--digits", "4", "--data-dir", str(data_dir),
                      "--data-source", "prepared")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"wrote {out}")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.height > 500  # ten rows of digits
        image.verify()
