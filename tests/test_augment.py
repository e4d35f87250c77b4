"""The seeds' augmentation: each transform's effect, its 1.x semantics, determinism."""

import albumentations as A
import cv2
import numpy as np
import pytest

from cifar_flax.augment import (
    LegacyShiftScaleRotate,
    augment_batch,
    build_train_transform,
)
from cifar_flax.config_lib import augmentation, hole_fill_value
from cifar_flax.splits import image_seeds

SEED_000_MEAN = (0.4914, 0.4822, 0.4466)


def augmented(transform, images, seed):
    return augment_batch(transform, images, image_seeds(len(images), seed))


def random_images(count=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def only(**kwargs):
    return build_train_transform(augmentation(**kwargs), SEED_000_MEAN)


def test_no_probability_means_no_transform():
    images = random_images(4)
    np.testing.assert_array_equal(augmented(only(), images, 0), images)


def test_horizontal_flip_mirrors():
    images = random_images(3)
    np.testing.assert_array_equal(augmented(only(hflip_p=1.0), images, 0), images[:, :, ::-1])


def test_legacy_shift_scale_rotate_matches_albumentations_1x():
    image = random_images()[0]
    transform = A.Compose(
        [LegacyShiftScaleRotate(shift=0.1, scale=0.1, rotate=15, p=1.0)],
        save_applied_params=True,
        strict=True,
    )
    shifts = []
    for seed in range(20):
        transform.set_random_seed(seed)
        result = transform(image=image)
        ((_, params),) = result["applied_transforms"]
        assert abs(params["angle"]) <= 15 and abs(params["scale"] - 1) <= 0.1
        assert abs(params["dx"]) <= 0.1 and abs(params["dy"]) <= 0.1
        shifts += [params["dx"] * 32, params["dy"] * 32]
        # What 1.x's ShiftScaleRotate.apply did with these parameters.
        matrix = cv2.getRotationMatrix2D((15.5, 15.5), params["angle"], params["scale"])
        matrix[0, 2] += params["dx"] * 32
        matrix[1, 2] += params["dy"] * 32
        expected = cv2.warpAffine(
            image, matrix, (32, 32), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        np.testing.assert_array_equal(result["image"], expected)
    assert not np.allclose(shifts, np.round(shifts))  # sub-pixel shifts, unlike 2.x's Affine


def test_shift_scale_rotate_reflects_instead_of_padding_black():
    white = np.full((1, 32, 32, 3), 255, np.uint8)
    transform = only(shift=0.1, scale=0.1, rotate=45, shift_scale_rotate_p=1.0)
    for seed in range(10):
        assert augmented(transform, white, seed).min() == 255


@pytest.mark.parametrize(("fill", "value"), [("mean", (125, 122, 113)), ("black", (0, 0, 0))])
def test_coarse_dropout_one_16x16_hole_inside_with_fill(fill, value):
    assert hole_fill_value(fill, SEED_000_MEAN) == value
    white = np.full((200, 32, 32, 3), 255, np.uint8)
    out = augmented(only(hole_fill=fill, coarse_dropout_p=1.0), white, 3)
    corners = set()
    for image in out:
        ys, xs = np.nonzero((image != 255).any(axis=-1))
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, len(ys)) == (16, 16, 256)
        np.testing.assert_array_equal(image[ys.min(), xs.min()], value)
        corners.add((ys.min(), xs.min()))
    top_lefts = np.array(sorted(corners))
    assert top_lefts.min() == 0 and top_lefts.max() == 16  # every position 0..16 reachable


def test_coarse_dropout_probability():
    white = np.full((400, 32, 32, 3), 255, np.uint8)
    out = augmented(only(coarse_dropout_p=0.25), white, 0)
    holed = (out != 255).any(axis=(1, 2, 3)).mean()
    assert 0.18 < holed < 0.32


def test_unknown_hole_fill_is_refused():
    with pytest.raises(ValueError, match="hole fill 'grey'"):
        only(hole_fill="grey", coarse_dropout_p=0.5)


def test_to_gray_uses_luma_weights():
    image = random_images()
    out = augmented(only(to_gray_p=1.0), image, 0)[0].astype(float)
    luma = image[0].astype(float) @ np.array([0.299, 0.587, 0.114])
    for channel in range(3):
        np.testing.assert_allclose(out[..., channel], luma, atol=1.0)


def test_color_jitter_ranges_follow_the_seed():
    transform = only(color_jitter=(0.3, 0.3, 0.3, 0.2), color_jitter_p=1.0)
    (jitter,) = transform.transforms
    assert jitter.brightness == jitter.contrast == jitter.saturation == pytest.approx((0.7, 1.3))
    assert jitter.hue == pytest.approx((-0.2, 0.2))
    images = random_images(4)
    assert not np.array_equal(augmented(transform, images, 0), images)


def test_transforms_are_strict():
    with pytest.raises(ValueError, match="not valid"):
        A.HorizontalFlip(p=0.5, prob=0.5, strict=True)


def test_same_seed_same_images_and_each_image_drawn_independently():
    transform = only(hflip_p=0.5, shift_scale_rotate_p=0.5, coarse_dropout_p=0.5, to_gray_p=0.5)
    same = np.repeat(random_images(), 16, axis=0)
    first, again = augmented(transform, same, 7), augmented(transform, same, 7)
    np.testing.assert_array_equal(first, again)
    assert len({image.tobytes() for image in first}) > 8
    assert not np.array_equal(augmented(transform, same, 8), first)


def test_each_image_depends_only_on_itself_and_its_seed():
    transform = only(hflip_p=0.5, shift_scale_rotate_p=0.5, coarse_dropout_p=0.5, to_gray_p=0.5)
    images, seeds = random_images(8), image_seeds(8, 1, 2, 3)
    whole = augment_batch(transform, images, seeds)
    halves = [augment_batch(transform, images[i : i + 4], seeds[i : i + 4]) for i in (0, 4)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)
    np.testing.assert_array_equal(augment_batch(transform, images[5:6], seeds[5:6])[0], whole[5])


def test_translate_is_a_whole_pixel_shift_with_the_border_reflected():
    images = random_images(400)
    shifted = augmented(only(translate=2), images, 3)
    padded = [cv2.copyMakeBorder(i, 2, 2, 2, 2, cv2.BORDER_REFLECT_101) for i in images]
    offsets = []
    for image, result in zip(padded, shifted, strict=True):
        (found,) = [
            (top, left)
            for top in range(5)
            for left in range(5)
            if np.array_equal(image[top : top + 32, left : left + 32], result)
        ]
        offsets.append(found)
    rows, columns = np.asarray(offsets).T
    # Each of the 5 offsets per axis, the identity included, drawn uniformly and independently.
    for axis in (rows, columns):
        assert np.bincount(axis, minlength=5).min() > 400 / 5 * 0.6
    assert abs(np.corrcoef(rows, columns)[0, 1]) < 0.15
