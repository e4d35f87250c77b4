"""A small synthetic CIFAR-10, prepared for tfds the way a user prepares the real one.

The images are written as an official binary archive (`cifar-10-batches-bin/`) and turned into
tfds's `cifar10` layout by scripts/prepare_cifar10.py, so every test that trains, resumes,
evaluates or runs the command line reads data through the same code as a user's run, from the
repository alone. Each class has its own colour and stripe direction under strong noise: a
network learns it within an epoch or two, and its augmented images still look like images.
"""

from __future__ import annotations

import pathlib

import numpy as np

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_PER_BATCH = 400  # 5 batches: 2,000 training images
TEST_IMAGES = 500
# One colour per class, far apart in RGB.
PALETTE = np.array(
    [
        (220, 40, 40),
        (40, 200, 40),
        (40, 60, 220),
        (220, 220, 40),
        (200, 40, 200),
        (40, 210, 210),
        (240, 140, 30),
        (120, 70, 30),
        (150, 150, 150),
        (30, 30, 30),
    ],
    np.float64,
)


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 NHWC images: the class colour, stripes at a class angle, and noise."""
    count = len(labels)
    rows, cols = np.mgrid[0:32, 0:32]
    angle = labels[:, None, None] * np.pi / 10
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    stripes = np.sin((rows * np.cos(angle) + cols * np.sin(angle)) * 0.8 + phase)
    base = PALETTE[labels][:, None, None, :] * rng.uniform(0.7, 1.1, (count, 1, 1, 1))
    image = base * (0.75 + 0.25 * stripes[..., None])
    image += rng.normal(0, 30, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_binary_archive(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """`folder/cifar-10-batches-bin/` as the official binary archive lays it out."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    counts = [(f"data_batch_{i}", TRAIN_PER_BATCH) for i in range(1, 6)]
    for name, count in [*counts, ("test_batch", TEST_IMAGES)]:
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        planar = synthetic_images(labels, rng).transpose(0, 3, 1, 2).reshape(count, -1)
        (batches / f"{name}.bin").write_bytes(
            np.concatenate([labels[:, None], planar], 1).tobytes()
        )
    (batches / "batches.meta.txt").write_text("\n".join(NAMES) + "\n")
    return batches
