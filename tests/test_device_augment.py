"""device_augment against the Albumentations/OpenCV code it replaces, on real CIFAR-10 images.

tests/data/cifar10_train_64.npz holds the first 64 images of tfds's cifar10 (3.0.2) train split:
    images = tfds.as_numpy(tfds.load("cifar10", split="train[:64]", batch_size=-1,
                                     as_supervised=True))[0]
"""

import pathlib
import random

import albumentations as A
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from albumentations.augmentations.pixel import functional as fpixel

from cifar_flax import device_augment
from cifar_flax.augment import LegacyShiftScaleRotate, build_train_transform
from cifar_flax.config_lib import CIFAR10_MEAN, augmentation, hole_fill_value, load_config
from tests.conftest import REPO_ROOT, ks_distance

IMAGES = np.load(pathlib.Path(__file__).parent / "data" / "cifar10_train_64.npz")["images"]
DRAWS = 100_000


def batched(function, *args):
    return np.asarray(jax.jit(jax.vmap(function))(jnp.asarray(IMAGES), *map(jnp.asarray, args)))


def library(function, *args):
    return np.stack(
        [function(image, *values) for image, *values in zip(IMAGES, *args, strict=True)]
    )


def test_the_fixture_is_real_cifar10():
    assert IMAGES.shape == (64, 32, 32, 3) and IMAGES.dtype == np.uint8
    assert 100 < IMAGES.mean() < 140 and len(np.unique(IMAGES)) == 256


def test_flip_is_exact():
    flip = A.HorizontalFlip(p=1.0)
    expected = library(lambda image: flip.apply(image))
    np.testing.assert_array_equal(batched(device_augment.horizontal_flip), expected)


@pytest.mark.parametrize("size", [2, 5, 32])
def test_reflect_101_is_opencvs(size):
    import cv2

    indices = np.arange(-3 * size, 4 * size)
    expected = [cv2.borderInterpolate(int(i), size, cv2.BORDER_REFLECT_101) for i in indices]
    got = np.asarray(device_augment.reflect_101(jnp.asarray(indices), size))
    np.testing.assert_array_equal(got, expected)


def test_translate_is_albumentations_pad_and_crop():
    pad_and_crop = build_train_transform(augmentation(translate=2), CIFAR10_MEAN)
    pad, crop = pad_and_crop.transforms
    rng = np.random.default_rng(4)
    top, left = rng.integers(0, 5, (2, len(IMAGES)))

    def expected(image, y, x):
        padded = pad.apply(image, **pad.get_params_dependent_on_data({"shape": image.shape}, {}))
        return crop.apply(padded, crop_coords=(x, y, x + 32, y + 32))

    got = batched(lambda image, y, x: device_augment.translate(image, y, x, 2), top, left)
    np.testing.assert_array_equal(got, library(expected, top, left))


def test_shift_scale_rotate_matches_opencv():
    """Float bilinear, as OpenCV 5 warps; OpenCV 4's 1/32-pixel positions stay within these
    bounds too (measured: mean 0.17 grey levels, largest 3, 83% of values equal)."""
    rng = np.random.default_rng(0)
    warp = LegacyShiftScaleRotate(shift=0.0625, scale=0.1, rotate=45.0, p=1.0)
    differences = []
    for _ in range(4):
        angle = rng.uniform(-45, 45, len(IMAGES)).astype(np.float32)
        scale = rng.uniform(0.9, 1.1, len(IMAGES)).astype(np.float32)
        dx, dy = rng.uniform(-0.0625, 0.0625, (2, len(IMAGES))).astype(np.float32)
        expected = library(
            lambda image, a, s, x, y: warp.apply(image, a, s, x, y), angle, scale, dx, dy
        )
        got = batched(device_augment.shift_scale_rotate, angle, scale, dx, dy)
        differences.append(np.abs(got.astype(int) - expected))
    differences = np.concatenate(differences)
    assert differences.mean() <= 1.0
    assert np.percentile(differences, 99.9) <= 3
    assert (differences == 0).mean() > 0.8  # the same arithmetic, not merely a close one


def test_the_identity_warp_is_exact():
    ones = np.ones(len(IMAGES), np.float32)
    got = batched(device_augment.shift_scale_rotate, 0 * ones, ones, 0 * ones, 0 * ones)
    np.testing.assert_array_equal(got, IMAGES)


@pytest.mark.parametrize("fill", ["mean", "black"])
def test_coarse_dropout_is_exact(fill):
    rng = np.random.default_rng(1)
    top, left = rng.integers(0, 17, (2, len(IMAGES)))
    colour = hole_fill_value(fill, CIFAR10_MEAN)
    dropout = A.CoarseDropout(
        num_holes_range=(1, 1), hole_height_range=(16, 16), hole_width_range=(16, 16), fill=colour
    )
    expected = library(
        lambda image, y, x: dropout.apply(image, np.array([[x, y, x + 16, y + 16]]), seed=0),
        top,
        left,
    )
    got = batched(
        lambda image, y, x: device_augment.coarse_dropout(image, y, x, 16, colour), top, left
    )
    np.testing.assert_array_equal(got, expected)


def test_to_gray_is_opencvs():
    import cv2

    gray = A.ToGray(p=1.0)
    differences = np.abs(batched(device_augment.to_gray).astype(int) - library(gray.apply))
    # device_augment has OpenCV 5's weights; OpenCV 4's round 0.05% of pixels one level apart.
    assert differences.max() <= (0 if int(cv2.__version__.split(".")[0]) >= 5 else 1)


# OpenCV's uint8 HSV -> RGB has two codes: a per-pixel one and a vectorised one that rounds one
# grey level differently in about a third of the values. Which one converts a row depends on the
# row's width, the OpenCV version and the CPU (here: rows of 32 pixels take the vectorised code in
# OpenCV 4.12 and the per-pixel one in 5.1), so Albumentations' hue is itself only defined to one
# level. device_augment follows the per-pixel code, which every OpenCV runs on a one-pixel-wide
# image: the colour jitters are compared on the images as columns of pixels, which every
# operation here treats as it treats the images (contrast's mean is the whole image's either way).
def as_columns(function):
    return lambda image, *args: function(image.reshape(-1, 1, 3), *args).reshape(image.shape)


def test_hsv_conversions_are_opencvs_per_pixel_code():
    import cv2

    forward = np.stack(device_augment.rgb_to_hsv(jnp.asarray(IMAGES)), axis=-1)
    expected = library(lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    np.testing.assert_array_equal(forward, expected)  # integer code, the same in both
    grid = np.stack(np.meshgrid(*map(np.arange, (180, 256, 256)), indexing="ij"), axis=-1)
    grid = grid.reshape(-1, 1, 3).astype(np.uint8)  # every (hue, saturation, value)
    inverse = device_augment.hsv_to_rgb(*jnp.asarray(grid[:, 0].T.astype(np.int32)))
    differences = np.abs(
        np.asarray(inverse)[:, None].astype(int) - cv2.cvtColor(grid, cv2.COLOR_HSV2RGB)
    )
    # float32 as OpenCV's, but where its compiler fuses a multiply-add XLA may round apart.
    assert differences.max() <= 1 and (differences == 0).mean() > 0.9999


JITTER_CASES = {
    # (device function, Albumentations function, factor range, largest difference allowed)
    "brightness": (device_augment.brightness, fpixel.adjust_brightness_torchvision, (0.5, 1.5), 0),
    # Albumentations' table is float64 (float32 values plus a float64 mean), truncated: the
    # float32 one here can truncate one grey level lower where a value lands on an integer.
    "contrast": (device_augment.contrast, fpixel.adjust_contrast_torchvision, (0.5, 1.5), 1),
    # OpenCV 4's gray has 14-bit weights, one level off OpenCV 5's in 0.05% of pixels.
    "saturation": (
        device_augment.saturation,
        fpixel.adjust_saturation_torchvision,
        (0.5, 1.5),
        1,
    ),
    # The integer forward conversion is exact; the hue step is float32 here, float64 there.
    "hue": (device_augment.hue_shift, fpixel.adjust_hue_torchvision, (-0.5, 0.5), 1),
}


def jitter_factors(name):
    _, _, (low, high), _ = JITTER_CASES[name]
    return np.random.default_rng(2).uniform(low, high, len(IMAGES)).astype(np.float32)


@pytest.mark.parametrize("name", JITTER_CASES)
def test_each_colour_jitter_matches_albumentations(name):
    device_function, library_function, _, tolerance = JITTER_CASES[name]
    factors = jitter_factors(name)
    expected = library(as_columns(lambda image, f: library_function(image, float(f))), factors)
    differences = np.abs(batched(device_function, factors).astype(int) - expected)
    assert differences.max() <= tolerance
    assert (differences == 0).mean() > 0.99


def test_hue_is_within_a_level_of_albumentations_on_whole_images():
    factors = jitter_factors("hue")
    expected = library(lambda image, f: fpixel.adjust_hue_torchvision(image, float(f)), factors)
    differences = np.abs(batched(device_augment.hue_shift, factors).astype(int) - expected)
    assert differences.max() <= 1  # whichever of OpenCV's two codes converted these rows


def test_color_jitter_applies_its_four_operations_in_the_drawn_order():
    rng = np.random.default_rng(3)
    jitter = A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.2, p=1.0)
    factors = np.stack(
        [rng.uniform(0.7, 1.3, len(IMAGES)) for _ in range(3)]
        + [rng.uniform(-0.2, 0.2, len(IMAGES))],
        axis=1,
    ).astype(np.float32)
    orders = np.stack([rng.permutation(4) for _ in IMAGES])
    expected = library(
        as_columns(lambda image, f, order: jitter.apply(image, *map(float, f), order=list(order))),
        factors,
        orders,
    )
    got = batched(device_augment.color_jitter, factors, orders)
    # Each operation can be off by one grey level (see JITTER_CASES), and what follows an
    # operation carries its difference on, scaled by at most the largest factor.
    differences = np.abs(got.astype(int) - expected)
    assert differences.max() <= 3
    assert (differences == 0).mean() > 0.99


def test_normalize_is_albumentations_normalize():
    mean, std = (0.4914, 0.4822, 0.4471), (0.2469, 0.2433, 0.2615)
    expected = A.Normalize(mean=mean, std=std, max_pixel_value=255.0).apply(IMAGES[0])
    got = np.asarray(device_augment.normalize(jnp.asarray(IMAGES[0]), mean, std))
    np.testing.assert_allclose(got, expected, atol=1e-5)


# Seed 003's own recipe (configs/s7.py:seed): all five transforms.
SEEDS_AUGMENTATION = load_config(REPO_ROOT / "configs" / "s7.py:seed").augment


@pytest.fixture(scope="module")
def device_draws():
    keys = jax.random.split(jax.random.key(0), DRAWS)
    draw = jax.jit(jax.vmap(lambda key: device_augment.sample_parameters(key, SEEDS_AUGMENTATION)))
    return jax.tree.map(np.asarray, draw(keys))


def transform_of_type(kind):
    (transform,) = [
        t for t in build_train_transform(SEEDS_AUGMENTATION, CIFAR10_MEAN) if isinstance(t, kind)
    ]
    return transform


def albumentations_draws(transform, draw):
    transform.set_random_state(np.random.default_rng(0), random.Random(0))
    return [draw(transform) for _ in range(DRAWS)]


def test_shift_scale_rotate_parameters_are_drawn_as_albumentations_draws_them(device_draws):
    ssr = SEEDS_AUGMENTATION.shift_scale_rotate
    warp = LegacyShiftScaleRotate(ssr.shift, ssr.scale, ssr.rotate, p=ssr.p)
    draws = albumentations_draws(warp, lambda t: t.get_params())
    for name in ("angle", "scale", "dx", "dy"):
        assert ks_distance(device_draws[name], [d[name] for d in draws]) <= 0.01, name


def test_hole_corners_are_drawn_as_albumentations_draws_them(device_draws):
    dropout = transform_of_type(A.CoarseDropout)
    draws = albumentations_draws(
        dropout, lambda t: t.get_params_dependent_on_data({"shape": (32, 32, 3)}, {})["holes"][0]
    )
    x_min, y_min = np.asarray(draws)[:, 0], np.asarray(draws)[:, 1]
    assert ks_distance(device_draws["hole_top"], y_min) <= 0.01
    assert ks_distance(device_draws["hole_left"], x_min) <= 0.01
    assert set(np.unique(device_draws["hole_top"])) == set(range(17))


def test_translations_are_drawn_as_albumentations_draws_them():
    augment = augmentation(translate=2)
    keys = jax.random.split(jax.random.key(1), DRAWS)
    draws = jax.jit(jax.vmap(lambda key: device_augment.sample_parameters(key, augment)))(keys)
    _, crop = build_train_transform(augment, CIFAR10_MEAN).transforms
    expected = np.asarray(
        albumentations_draws(
            crop,
            lambda t: t.get_params_dependent_on_data({"shape": (36, 36, 3)}, {})["crop_coords"],
        )
    )
    assert ks_distance(np.asarray(draws["crop_top"]), expected[:, 1]) <= 0.01
    assert ks_distance(np.asarray(draws["crop_left"]), expected[:, 0]) <= 0.01
    assert set(np.unique(np.asarray(draws["crop_top"]))) == set(range(5))


def test_colour_jitter_parameters_are_drawn_as_albumentations_draws_them(device_draws):
    jitter = transform_of_type(A.ColorJitter)
    draws = albumentations_draws(jitter, lambda t: t.get_params())
    for column, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        expected = [d[name] for d in draws]
        assert ks_distance(device_draws["jitter_factors"][:, column], expected) <= 0.01, name
    orders = np.asarray([d["order"] for d in draws])
    for position in range(4):
        got = device_draws["jitter_order"][:, position]
        assert ks_distance(got, orders[:, position]) <= 0.01
    assert all(sorted(order) == [0, 1, 2, 3] for order in device_draws["jitter_order"][:100])


@pytest.mark.parametrize(
    "name, p",
    [
        ("flip", SEEDS_AUGMENTATION.hflip_p),
        ("shift_scale_rotate", SEEDS_AUGMENTATION.shift_scale_rotate.p),
        ("coarse_dropout", SEEDS_AUGMENTATION.coarse_dropout.p),
        ("color_jitter", SEEDS_AUGMENTATION.color_jitter.p),
        ("to_gray", SEEDS_AUGMENTATION.to_gray_p),
    ],
)
def test_each_transform_applies_with_its_probability(device_draws, name, p):
    # Albumentations applies a transform where random() < p: a Bernoulli(p) draw per image.
    assert abs(device_draws[name].mean() - p) <= 0.01


def test_draws_for_different_transforms_are_independent(device_draws):
    correlation = np.corrcoef(device_draws["flip"], device_draws["shift_scale_rotate"])[0, 1]
    assert abs(correlation) < 0.01


def test_an_image_depends_only_on_itself_and_its_key():
    keys = jax.random.split(jax.random.key(5), len(IMAGES))
    augment = jax.jit(
        lambda images, keys: device_augment.augment_images(
            images, keys, SEEDS_AUGMENTATION, CIFAR10_MEAN
        )
    )
    whole = np.asarray(augment(jnp.asarray(IMAGES), keys))
    part = np.asarray(augment(jnp.asarray(IMAGES[10:20]), keys[10:20]))
    np.testing.assert_array_equal(whole[10:20], part)
    assert (whole != IMAGES).any(axis=(1, 2, 3)).mean() > 0.5


def test_the_batch_goes_through_the_transforms_it_drew():
    """augment_images is the per-transform functions applied where each draw says."""
    augment = SEEDS_AUGMENTATION.copy_and_resolve_references()
    augment.translate = 2  # every transform there is
    keys = jax.random.split(jax.random.key(6), len(IMAGES))
    got = np.asarray(
        device_augment.augment_images(jnp.asarray(IMAGES), keys, augment, CIFAR10_MEAN)
    )
    colour = hole_fill_value("mean", CIFAR10_MEAN)
    for image, key, result in zip(IMAGES[:16], keys, got, strict=False):
        p = device_augment.sample_parameters(key, augment)
        expected = jnp.asarray(image)
        if p["flip"]:
            expected = device_augment.horizontal_flip(expected)
        expected = device_augment.translate(expected, p["crop_top"], p["crop_left"], 2)
        if p["shift_scale_rotate"]:
            expected = device_augment.shift_scale_rotate(
                expected, p["angle"], p["scale"], p["dx"], p["dy"]
            )
        if p["coarse_dropout"]:
            expected = device_augment.coarse_dropout(
                expected, p["hole_top"], p["hole_left"], 16, colour
            )
        if p["color_jitter"]:
            expected = device_augment.color_jitter(expected, p["jitter_factors"], p["jitter_order"])
        if p["to_gray"]:
            expected = device_augment.to_gray(expected)
        np.testing.assert_array_equal(result, np.asarray(expected))
