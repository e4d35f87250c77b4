"""The host path's augmentation (`augment.build_train_transform`) as batched JAX on uint8 images.

Each transform is the same arithmetic as the Albumentations/OpenCV code it replaces, on one
image with its own sampled parameters, vmapped over the batch; `augment_images` applies them in
the host path's order (HorizontalFlip, translation, ShiftScaleRotate, CoarseDropout,
ColorJitter, ToGray), each to the images that drew it. Every image's randomness comes from its
own key, so an image's result does not depend on the batch it is in.
tests/test_device_augment.py holds each transform against the library on real CIFAR-10 images,
and each sampled parameter's distribution against Albumentations' own sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from ml_collections import config_dict

from cifar_flax.config_lib import hole_fill_value

# OpenCV 5's RGB -> gray in fixed point (cv2.COLOR_RGB2GRAY on uint8): (R, G, B) weights / 2**15.
# (OpenCV 4 has 14-bit weights, (4899, 9617, 1868), which round 0.05% of pixels one level apart.)
GRAY_WEIGHTS = (9798, 19235, 3735)
GRAY_SHIFT = 15
# cv2.cvtColor's RGB -> HSV on uint8: hue in [0, 180), divisions as 12-bit fixed-point tables.
HUE_RANGE = 180
HSV_SHIFT = 12


def horizontal_flip(image: jax.Array) -> jax.Array:
    return image[:, ::-1]


def reflect_101(index: jax.Array, size: int) -> jax.Array:
    """cv2.BORDER_REFLECT_101 (`dcb|abcd|cba`) for any integer index."""
    period = 2 * size - 2
    index = jnp.abs(index) % period
    return jnp.where(index >= size, period - index, index)


def translate(image: jax.Array, top: jax.Array, left: jax.Array, pixels: int) -> jax.Array:
    """A crop at (top, left) of the image padded by `pixels` on each side with BORDER_REFLECT_101
    (numpy's "reflect"): the host path's PadIfNeeded then RandomCrop."""
    padded = jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), mode="reflect")
    return jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)


def shift_scale_rotate(
    image: jax.Array, angle: jax.Array, scale: jax.Array, dx: jax.Array, dy: jax.Array
) -> jax.Array:
    """`augment.LegacyShiftScaleRotate.apply`: cv2.warpAffine of cv2.getRotationMatrix2D about
    ((W-1)/2, (H-1)/2), shifted by (dx * W, dy * H), bilinear, BORDER_REFLECT_101.

    Each output pixel samples the input at the inverse transform of its position, its four
    neighbours weighed by the fractional parts in float32 and rounded, as OpenCV 5 does. (OpenCV
    4 rounds the position to 1/32 pixel first, which moves a value by a grey level or two.)
    """
    height, width = image.shape[:2]
    radians = jnp.deg2rad(angle)
    alpha, beta = jnp.cos(radians) * scale, jnp.sin(radians) * scale
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    tx = (1 - alpha) * cx - beta * cy + dx * width
    ty = beta * cx + (1 - alpha) * cy + dy * height
    # cv2.invertAffineTransform of [[alpha, beta, tx], [-beta, alpha, ty]].
    inverse_det = 1 / (alpha * alpha + beta * beta)
    m00, m01 = alpha * inverse_det, -beta * inverse_det
    m10, m11 = beta * inverse_det, alpha * inverse_det
    m02, m12 = -m00 * tx - m01 * ty, -m10 * tx - m11 * ty

    rows = jnp.arange(height, dtype=jnp.float32)[:, None]
    cols = jnp.arange(width, dtype=jnp.float32)[None, :]
    x = m00 * cols + m01 * rows + m02
    y = m10 * cols + m11 * rows + m12
    x0, y0 = jnp.floor(x), jnp.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)

    def tap(row_offset: int, col_offset: int) -> jax.Array:
        source_rows = reflect_101(y0 + row_offset, height)
        return image[source_rows, reflect_101(x0 + col_offset, width)].astype(jnp.float32)

    top = (1 - fx) * tap(0, 0) + fx * tap(0, 1)
    bottom = (1 - fx) * tap(1, 0) + fx * tap(1, 1)
    return jnp.clip(jnp.round((1 - fy) * top + fy * bottom), 0, 255).astype(jnp.uint8)


def coarse_dropout(
    image: jax.Array, top: jax.Array, left: jax.Array, size: int, fill: Sequence[int]
) -> jax.Array:
    """One `size` x `size` hole with its top-left corner at (top, left), filled with `fill`."""
    rows = jnp.arange(image.shape[0])[:, None]
    cols = jnp.arange(image.shape[1])[None, :]
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return jnp.where(inside[..., None], jnp.asarray(fill, jnp.uint8), image)


def gray_levels(image: jax.Array) -> jax.Array:
    """cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) on uint8, exactly: an int32 H x W array."""
    weighted = jnp.tensordot(image.astype(jnp.int32), jnp.asarray(GRAY_WEIGHTS), axes=1)
    return (weighted + (1 << (GRAY_SHIFT - 1))) >> GRAY_SHIFT


def to_gray(image: jax.Array) -> jax.Array:
    """`A.ToGray()`: OpenCV's weighted gray, in all three channels."""
    gray = gray_levels(image).astype(jnp.uint8)
    return jnp.broadcast_to(gray[..., None], image.shape)


def brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Albumentations' uint8 brightness: the table clip(v * factor, 0, 255), truncated."""
    return jnp.clip(image.astype(jnp.float32) * factor, 0, 255).astype(jnp.uint8)


def contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Albumentations' uint8 contrast: v * factor + (1 - factor) * mean gray, clipped, truncated;
    all one grey (the mean rounded) at factor 0."""
    mean = gray_levels(image).astype(jnp.float32).mean()
    adjusted = jnp.clip(image.astype(jnp.float32) * factor + mean * (1 - factor), 0, 255)
    flat = jnp.full_like(image, jnp.floor(mean + 0.5).astype(jnp.uint8))
    return jnp.where(factor == 0, flat, adjusted.astype(jnp.uint8))


def saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Albumentations' saturation: cv2.addWeighted(image, factor, gray, 1 - factor, 0), which
    rounds half to even and saturates."""
    gray = gray_levels(image).astype(jnp.float32)[..., None]
    mixed = image.astype(jnp.float32) * factor + gray * (1 - factor)
    return jnp.clip(jnp.round(mixed), 0, 255).astype(jnp.uint8)


def _fixed_point_reciprocal(numerator: int, divisor: jax.Array) -> jax.Array:
    """OpenCV's division tables: round(numerator * 2**12 / divisor), and 0 for divisor 0."""
    quotient = jnp.round(numerator * (1 << HSV_SHIFT) / jnp.maximum(divisor, 1))
    return jnp.where(divisor == 0, 0, quotient.astype(jnp.int32))


def rgb_to_hsv(image: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """cv2.cvtColor(image, cv2.COLOR_RGB2HSV) on uint8, in int32: hue in [0, 180], S, V."""
    r, g, b = (image[..., c].astype(jnp.int32) for c in range(3))
    value = jnp.maximum(jnp.maximum(r, g), b)
    spread = value - jnp.minimum(jnp.minimum(r, g), b)
    half = 1 << (HSV_SHIFT - 1)
    sat = (spread * _fixed_point_reciprocal(255, value) + half) >> HSV_SHIFT
    hue = jnp.where(
        value == r, g - b, jnp.where(value == g, b - r + 2 * spread, r - g + 4 * spread)
    )
    hue = (hue * _fixed_point_reciprocal(HUE_RANGE, 6 * spread) + half) >> HSV_SHIFT
    return jnp.where(hue < 0, hue + HUE_RANGE, hue), sat, value


def hsv_to_rgb(hue: jax.Array, sat: jax.Array, value: jax.Array) -> jax.Array:
    """cv2.cvtColor(..., cv2.COLOR_HSV2RGB) on uint8: OpenCV's float conversion, rounded."""
    h = hue.astype(jnp.float32) * (6 / HUE_RANGE)
    s = sat.astype(jnp.float32) * (1 / 255)  # as OpenCV: times the float reciprocal
    v = value.astype(jnp.float32) * (1 / 255)
    h = jnp.mod(h, 6)
    sector = jnp.floor(h).astype(jnp.int32)
    h = h - sector
    tab = jnp.stack([v, v * (1 - s), v * (1 - s * h), v * (1 - s * (1 - h))], axis=-1)
    # OpenCV's table of which of tab's entries are (b, g, r) in each of the six sectors.
    sectors = jnp.asarray([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
    bgr = jnp.take_along_axis(tab, sectors[sector], axis=-1)
    bgr = jnp.where((s == 0)[..., None], v[..., None], bgr)
    return jnp.clip(jnp.round(bgr[..., ::-1] * 255), 0, 255).astype(jnp.uint8)


def hue_shift(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Albumentations' uint8 hue: to OpenCV's HSV, hue moved by 180 * factor (mod 180,
    truncated), back to RGB."""
    hue, sat, value = rgb_to_hsv(image)
    # floor(mod(h + x, 180)) for an integer h is mod(h + floor(x), 180): the whole image moves by
    # one integer step, so float32 can differ from Albumentations' float64 only where 180 * factor
    # lies within float32's rounding of an integer.
    step = jnp.floor(HUE_RANGE * factor).astype(jnp.int32)
    shifted = jnp.mod(hue + step, HUE_RANGE)
    return jnp.where(factor == 0, image, hsv_to_rgb(shifted, sat, value))


JITTERS = (brightness, contrast, saturation, hue_shift)  # ColorJitter's operation numbers


def color_jitter(image: jax.Array, factors: jax.Array, order: jax.Array) -> jax.Array:
    """`A.ColorJitter.apply`: brightness, contrast, saturation and hue (factors[0..3]) in
    `order`, a permutation of 0..3."""
    for step in range(len(JITTERS)):
        operation = order[step]
        image = jax.lax.switch(operation, JITTERS, image, factors[operation])
    return image


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """`A.Normalize(mean, std)` with max_pixel_value 255, as the host path's batches."""
    mean_255 = jnp.asarray(mean, jnp.float32) * 255.0
    std_255 = jnp.asarray(std, jnp.float32) * 255.0
    return (images.astype(jnp.float32) - mean_255) / std_255


def sample_parameters(
    key: jax.Array, augment: config_dict.ConfigDict, height: int = 32, width: int = 32
) -> dict[str, jax.Array]:
    """One image's draw of every transform's parameters and of whether it applies, from the
    distributions Albumentations samples them from."""
    names = ("flip", "ssr", "hole", "jitter", "gray", "translate")
    keys = dict(zip(names, jax.random.split(key, len(names)), strict=True))

    def applies(name: str, p: float) -> jax.Array:
        return jax.random.uniform(jax.random.fold_in(keys[name], 0)) < p

    def uniform(name: str, shape: tuple[int, ...], low, high) -> jax.Array:
        draw = jax.random.uniform(jax.random.fold_in(keys[name], 1), shape)
        low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
        return low + (high - low) * draw

    ssr, hole, jitter = augment.shift_scale_rotate, augment.coarse_dropout, augment.color_jitter
    angle, scale, dx, dy = uniform(
        "ssr",
        (4,),
        (-ssr.rotate, 1 - ssr.scale, -ssr.shift, -ssr.shift),
        (ssr.rotate, 1 + ssr.scale, ssr.shift, ssr.shift),
    )
    corner = jax.random.randint(
        jax.random.fold_in(keys["hole"], 1), (2,), 0, jnp.asarray((height, width)) - hole.size + 1
    )
    # RandomCrop's corner: int((padded - 32 + 1) * U[0, 1)), i.e. uniform over every position.
    crop = jax.random.randint(keys["translate"], (2,), 0, 2 * augment.translate + 1)
    spreads = (jitter.brightness, jitter.contrast, jitter.saturation)
    factors = uniform(
        "jitter",
        (4,),
        (*(max(0.0, 1 - spread) for spread in spreads), -jitter.hue),
        (*(1 + spread for spread in spreads), jitter.hue),
    )
    order = jax.random.permutation(jax.random.fold_in(keys["jitter"], 2), len(JITTERS))
    return {
        "flip": applies("flip", augment.hflip_p),
        "crop_top": crop[0],
        "crop_left": crop[1],
        "shift_scale_rotate": applies("ssr", ssr.p),
        "angle": angle,
        "scale": scale,
        "dx": dx,
        "dy": dy,
        "coarse_dropout": applies("hole", hole.p),
        "hole_top": corner[0],
        "hole_left": corner[1],
        "color_jitter": applies("jitter", jitter.p),
        "jitter_factors": factors,
        "jitter_order": order,
        "to_gray": applies("gray", augment.to_gray_p),
    }


def augment_image(
    image: jax.Array,
    params: dict[str, jax.Array],
    augment: config_dict.ConfigDict,
    mean: Sequence[float],
) -> jax.Array:
    """One uint8 image through the config's transforms, each where its draw says it applies."""
    if augment.hflip_p:
        image = jnp.where(params["flip"], horizontal_flip(image), image)
    if augment.translate:
        image = translate(image, params["crop_top"], params["crop_left"], augment.translate)
    if augment.shift_scale_rotate.p:
        warped = shift_scale_rotate(
            image, params["angle"], params["scale"], params["dx"], params["dy"]
        )
        image = jnp.where(params["shift_scale_rotate"], warped, image)
    hole = augment.coarse_dropout
    if hole.p:
        filled = coarse_dropout(
            image,
            params["hole_top"],
            params["hole_left"],
            hole.size,
            hole_fill_value(hole.fill, mean),
        )
        image = jnp.where(params["coarse_dropout"], filled, image)
    if augment.color_jitter.p:
        jittered = color_jitter(image, params["jitter_factors"], params["jitter_order"])
        image = jnp.where(params["color_jitter"], jittered, image)
    if augment.to_gray_p:
        image = jnp.where(params["to_gray"], to_gray(image), image)
    return image


def on_device(augment_on: str) -> bool:
    """Whether `augment_on` ("host", "device" or "auto") puts the augmentation on the devices:
    "auto" does where JAX computes on a GPU or TPU, whose step the host could not feed."""
    if augment_on == "auto":
        return jax.default_backend() != "cpu"
    return augment_on == "device"


def place(augment_on: str) -> str:
    """Where `augment_on` puts the augmentation, in words: "devices" or "host"."""
    return "devices" if on_device(augment_on) else "host"


def image_keys(seed: int, epoch: Any, step: Any, count: int) -> jax.Array:
    """One key per position of the global batch `step` of epoch `epoch` of run `seed`."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch), step)
    return jax.vmap(lambda position: jax.random.fold_in(key, position))(jnp.arange(count))


def augment_images(
    images: jax.Array, keys: jax.Array, augment: config_dict.ConfigDict, mean: Sequence[float]
) -> jax.Array:
    """A uint8 NHWC batch augmented image by image, image i with keys[i]."""
    height, width = images.shape[1:3]

    def one(image: jax.Array, key: jax.Array) -> jax.Array:
        return augment_image(image, sample_parameters(key, augment, height, width), augment, mean)

    return jax.vmap(one)(images, keys)
