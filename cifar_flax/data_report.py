"""`--mode=data`: the dataset's class counts and pixel statistics, and a grid of augmented
training images, so that a user sees what the network will be fed."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

import numpy as np
from ml_collections import config_dict

from cifar_flax import device_augment, input_pipeline, plots
from cifar_flax.splits import image_seeds

SAMPLE_GRID = "augmented_samples.png"
SAMPLES_SHOWN = 32


def describe_data(config: config_dict.ConfigDict, workdir: pathlib.Path) -> None:
    """Print class counts and pixel statistics; save a grid of augmented training images."""
    input_pipeline.hide_gpus_from_tensorflow()
    train = input_pipeline.load_split(config.data_dir, config.train_split, config.download)
    held_out = input_pipeline.load_split(config.data_dir, config.eval_split, config.download)
    width = max(map(len, train.class_names))
    print(f"{'class':{width}s}  {train.name:>12s}  {held_out.name:>12s}")
    counts = zip(
        input_pipeline.class_counts(train), input_pipeline.class_counts(held_out), strict=True
    )
    for name, (n_train, n_held_out) in zip(train.class_names, counts, strict=True):
        print(f"{name:{width}s}  {n_train:12,d}  {n_held_out:12,d}")
    print(f"{'total':{width}s}  {len(train):12,d}  {len(held_out):12,d}")
    mean, std = input_pipeline.channel_stats(train)
    print(f"Train mean: ({join(mean)}) std: ({join(std)})")
    count = min(SAMPLES_SHOWN, len(train))
    samples = augmented_samples(config, train.images[:count])
    path = plots.save_image_grid(
        samples,
        [train.class_names[label] for label in train.labels[:count]],
        workdir / SAMPLE_GRID,
        suptitle=(
            f"{config.model}: training samples augmented on the "
            f"{device_augment.place(config.augment_on)} ({train.name})"
        ),
    )
    print(f"Wrote {path}")


def augmented_samples(config: config_dict.ConfigDict, images: np.ndarray) -> np.ndarray:
    """`images` through the training augmentation, where `config.augment_on` puts it."""
    augment, mean = config.augment, config.normalize.mean
    if device_augment.on_device(config.augment_on):
        keys = device_augment.image_keys(config.seed, 0, 0, len(images))
        return np.asarray(device_augment.augment_images(images, keys, augment, mean))
    return input_pipeline.Augmenter(augment, mean)(images, image_seeds(len(images), config.seed))


def join(values: Iterable[float]) -> str:
    return ", ".join(f"{value:.4f}" for value in values)
