"""The seeds' Albumentations augmentation, built from a config, applied to uint8 HWC images.

Albumentations 2.x renamed or changed several of the transforms the seeds ran under 1.x; each
builder below keeps the 1.x semantics (docs/seeds.md, "Augmentations"), and every
transform is built with `strict=True`, so a misspelt argument fails instead of being ignored.

This module imports neither JAX nor TensorFlow: it also runs in the input pipeline's worker
processes.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
from ml_collections import config_dict

from cifar_flax.config_lib import hole_fill_value


@contextlib.contextmanager
def hidden_module(name: str) -> Iterator[None]:
    """Make `import name` fail inside the block, unless it is imported already; importable after."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]  # Python's mark for "not importable"
    try:
        yield
    finally:
        del sys.modules[name]


# Albumentations imports its PyTorch transforms wherever torch is installed (Colab has it), which
# costs ~185 MB in the trainer and in each augmentation worker, none of which uses them. Where
# torch cannot be imported, Albumentations skips them; torch stays importable for everything else.
with hidden_module("torch"):
    import albumentations as A


class LegacyShiftScaleRotate(A.ImageOnlyTransform):
    """Albumentations 1.x `ShiftScaleRotate`, as every seed ran it.

    It draws an angle in [-rotate, rotate], one isotropic scale in [1 - scale, 1 + scale] and
    shifts in [-shift, shift] of the size, and warps about ((W-1)/2, (H-1)/2), bilinear, with
    BORDER_REFLECT_101. Neither 2.x replacement keeps that: its `ShiftScaleRotate` scales x and y
    independently and pads black by default, and `Affine` truncates the shift to whole pixels
    (a 0.1 shift on 32 pixels becomes -3..3, with 0 drawn a third of the time).
    """

    def __init__(self, shift: float, scale: float, rotate: float, p: float = 0.5):
        super().__init__(p=p)
        self.shift = shift
        self.scale = scale
        self.rotate = rotate

    def get_params(self) -> dict[str, float]:
        uniform = self.py_random.uniform
        return {
            "angle": uniform(-self.rotate, self.rotate),
            "scale": uniform(1 - self.scale, 1 + self.scale),
            "dx": uniform(-self.shift, self.shift),
            "dy": uniform(-self.shift, self.shift),
        }

    def apply(
        self, img: np.ndarray, angle: float, scale: float, dx: float, dy: float, **params
    ) -> np.ndarray:
        height, width = img.shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2 - 0.5, height / 2 - 0.5), angle, scale)
        matrix[0, 2] += dx * width
        matrix[1, 2] += dy * height
        return cv2.warpAffine(
            img,
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("shift", "scale", "rotate")


def build_train_transform(augment: config_dict.ConfigDict, mean: Sequence[float]) -> A.Compose:
    """The random part of a seed's training augmentation, in the seeds' order.

    It maps uint8 to uint8; the input pipeline normalises whole batches, train and eval alike.
    """
    transforms: list[A.BasicTransform] = []
    if augment.hflip_p:
        transforms.append(A.HorizontalFlip(p=augment.hflip_p, strict=True))
    if augment.translate:
        size = 32 + 2 * augment.translate  # CIFAR-10's 32x32 images, padded on each side
        transforms += [
            A.PadIfNeeded(size, size, border_mode=cv2.BORDER_REFLECT_101, strict=True),
            A.RandomCrop(32, 32, strict=True),
        ]
    ssr = augment.shift_scale_rotate
    if ssr.p:
        transforms.append(LegacyShiftScaleRotate(ssr.shift, ssr.scale, ssr.rotate, ssr.p))
    hole = augment.coarse_dropout
    if hole.p:
        transforms.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(hole.size, hole.size),
                hole_width_range=(hole.size, hole.size),
                fill=hole_fill_value(hole.fill, mean),
                p=hole.p,
                strict=True,
            )
        )
    jitter = augment.color_jitter
    if jitter.p:
        transforms.append(
            A.ColorJitter(
                brightness=jitter.brightness,
                contrast=jitter.contrast,
                saturation=jitter.saturation,
                hue=jitter.hue,
                p=jitter.p,
                strict=True,
            )
        )
    if augment.to_gray_p:
        transforms.append(A.ToGray(p=augment.to_gray_p, strict=True))
    return A.Compose(transforms, strict=True)


def augment_batch(transform: A.Compose, images: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """Augment each uint8 image with its own seed; image i depends only on images[i], seeds[i].

    Per-image seeds let any slice of a batch (one host's share of a global batch, one worker's
    part) be augmented alone with the same result. (`transform(images=batch)` would give every
    image of the batch the same random parameters.) One generator pair is shared by all the
    transforms: `set_random_seed` would build one per transform, as slow as the augmentation.
    """
    augmented = []
    for image, seed in zip(images, np.asarray(seeds).tolist(), strict=True):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        augmented.append(transform(image=image)["image"])
    return np.stack(augmented)
