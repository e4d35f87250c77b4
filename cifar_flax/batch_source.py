"""Where a run's global training batches come from: the host (`augment_on` "host": tf.data
with Albumentations in worker processes, `input_pipeline`) or the devices ("device").

On the devices, the host sends the decoded split once, replicated on every device, then one
small array an epoch (the order in which the epoch visits the images: the host path's own
`epoch_order`) and the epoch's first step; nothing a step. Each step gathers its images,
augments them with `device_augment` and normalises them in one jitted function whose outputs
are the global batch, split over the devices as the host path's batches are (each device
computes its own rows), and the next step number. Every image draws from a key of (seed,
epoch, step, position in the global batch): a batch depends only on those, as on the host,
and a run resumed mid-epoch sees the same batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from ml_collections import config_dict

from cifar_flax import device_augment, splits
from cifar_flax.distributed import global_batches, process_shard
from cifar_flax.steps import data_sharding, replicated

Batch = dict[str, jax.Array]
# (epoch index from 0, first step) -> that epoch's global batches from that step on
Batches = Callable[[int, int], Iterator[Batch]]


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
    """A split on the devices: uint8 NHWC images and int32 labels, replicated on each."""

    images: jax.Array
    labels: jax.Array

    def __len__(self) -> int:
        return len(self.labels)


def replicate(mesh: Mesh, value: Any) -> jax.Array:
    """`value` (the same in every process) as an array replicated on every device of `mesh`."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, replicated(mesh), lambda index: value[index])


def put_split(split: splits.Split, mesh: Mesh) -> DeviceSplit:
    return DeviceSplit(replicate(mesh, split.images), replicate(mesh, split.labels))


def batch_maker(
    config: config_dict.ConfigDict, mesh: Mesh
) -> Callable[..., tuple[Batch, jax.Array]]:
    """The jitted (split images, split labels, epoch order, epoch, step) -> (global batch of
    `config`, step + 1); the batch {"image": float32 NHWC, augmented and normalised, "label":
    int32}."""
    batch_size, rows, normalize = config.batch_size, data_sharding(mesh), config.normalize

    def make(
        images: jax.Array, labels: jax.Array, order: jax.Array, epoch: jax.Array, step: jax.Array
    ) -> tuple[Batch, jax.Array]:
        chosen = jax.lax.dynamic_slice_in_dim(order, step * batch_size, batch_size)
        chosen = jax.lax.with_sharding_constraint(chosen, rows)
        keys = device_augment.image_keys(config.seed, epoch, step, batch_size)
        keys = jax.lax.with_sharding_constraint(keys, rows)
        augmented = device_augment.augment_images(
            images[chosen], keys, config.augment, normalize.mean
        )
        batch = {
            "image": device_augment.normalize(augmented, normalize.mean, normalize.std),
            "label": labels[chosen],
        }
        return batch, step + 1

    return jax.jit(make, out_shardings=(rows, replicated(mesh)))


def device_batches(
    split: DeviceSplit,
    config: config_dict.ConfigDict,
    mesh: Mesh,
    make_batch: Callable[..., tuple[Batch, jax.Array]],
    epoch: int,
    start_step: int = 0,
) -> Iterator[Batch]:
    """Epoch `epoch`'s global batches from step `start_step` on, in the host path's order of
    images; the last partial batch is dropped, as there."""
    order = replicate(mesh, splits.epoch_order(len(split), config.seed, epoch))
    epoch_number, step = replicate(mesh, np.int32(epoch)), replicate(mesh, np.int32(start_step))
    for _ in range(start_step, len(split) // config.batch_size):
        batch, step = make_batch(split.images, split.labels, order, epoch_number, step)
        yield batch


@contextlib.contextmanager
def open_batches(
    config: config_dict.ConfigDict, split: splits.Split, mesh: Mesh
) -> Iterator[Batches]:
    """The run's batches, augmented where `config.augment_on` says; on the host, the
    augmentation workers run until the block ends."""
    if device_augment.on_device(config.augment_on):
        on_devices, make_batch = put_split(split, mesh), batch_maker(config, mesh)
        yield lambda epoch, start: device_batches(
            on_devices, config, mesh, make_batch, epoch, start
        )
        return
    # TensorFlow and Albumentations: only the host path needs them.
    from cifar_flax import input_pipeline

    workers = input_pipeline.augment_workers(config.augment_workers)
    to_global = global_batches(data_sharding(mesh))
    with input_pipeline.Augmenter(config.augment, config.normalize.mean, workers) as augmenter:
        yield lambda epoch, start: map(
            to_global,
            input_pipeline.train_batches(split, config, epoch, augmenter, start, process_shard()),
        )
