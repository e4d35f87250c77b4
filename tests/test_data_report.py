"""--mode=data's samples: augmented where the config's augment_on puts the training augmentation."""

import jax.numpy as jnp
import numpy as np

from cifar_flax import device_augment, input_pipeline
from cifar_flax.data_report import augmented_samples
from cifar_flax.splits import image_seeds
from tests.conftest import make_config

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)


def test_samples_are_augmented_on_the_devices_as_training_would():
    config = make_config(augment_on="device")
    samples = augmented_samples(config, IMAGES)
    keys = device_augment.image_keys(config.seed, 0, 0, len(IMAGES))
    expected = device_augment.augment_images(
        jnp.asarray(IMAGES), keys, config.augment, config.normalize.mean
    )
    assert device_augment.place(config.augment_on) == "devices"
    np.testing.assert_array_equal(samples, np.asarray(expected))
    assert (samples != IMAGES).any()


def test_samples_are_augmented_on_the_host_as_training_would():
    config = make_config(augment_on="host")
    samples = augmented_samples(config, IMAGES)
    augmenter = input_pipeline.Augmenter(config.augment, config.normalize.mean)
    assert device_augment.place(config.augment_on) == "host"
    np.testing.assert_array_equal(samples, augmenter(IMAGES, image_seeds(8, config.seed)))
