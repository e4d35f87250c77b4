"""A split decoded into memory and the order in which a run visits it: what the host's input
pipeline and the devices' batches share. It imports neither TensorFlow nor Albumentations, so
the device path runs where those are not installed (e.g. timing on a machine without them)."""

from __future__ import annotations

import dataclasses

import numpy as np

from cifar_flax.errors import CifarFlaxError

Batch = dict[str, np.ndarray]
CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Split:
    """A split decoded into memory: uint8 NHWC images and int32 labels."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def synthetic(count: int, seed: int = 0) -> Split:
    """`count` uniform-noise uint8 images of CIFAR-10's shape and random labels: a stand-in
    for timing where the real split cannot be loaded."""
    rng = np.random.default_rng(seed)
    return Split(
        "synthetic",
        rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, CLASSES, count).astype(np.int32),
        tuple(f"class {index}" for index in range(CLASSES)),
    )


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's rows of every global batch: `index` of `count` equal parts."""

    index: int = 0
    count: int = 1

    def rows(self, batch_size: int) -> slice:
        if batch_size % self.count:
            raise CifarFlaxError(
                f"batch_size {batch_size} must be a multiple of the {self.count} processes"
            )
        size = batch_size // self.count
        return slice(self.index * size, (self.index + 1) * size)


def image_seeds(count: int, *entropy: int) -> np.ndarray:
    """`count` 32-bit seeds drawn from the given integers (e.g. run seed, epoch, batch index)."""
    return np.random.SeedSequence(list(entropy)).generate_state(count)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` of run `seed` visits the `count` training images."""
    return np.random.default_rng(image_seeds(2, seed, epoch)).permutation(count)
