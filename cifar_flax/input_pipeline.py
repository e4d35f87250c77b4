"""CIFAR-10 from tensorflow-datasets through tf.data, with Albumentations on the host.

    split = load_split(config.data_dir, config.train_split)       # uint8 images in memory
    with Augmenter(config.augment, config.normalize.mean) as augmenter:
        for batch in train_batches(split, config, epoch, augmenter):  # numpy dicts
            ...

Each epoch is a pure function of (seed, epoch): tf.data shuffles with a seed drawn from both,
and every image is augmented with a seed drawn from (seed, epoch, batch index, position in the
batch). So the batches do not depend on how many worker processes or hosts augment them, a
run resumed in the middle of an epoch sees the same batches, and each of several processes
(multi-host training) can produce just its own rows of every global batch.

Why this arrangement: Albumentations is per-image Python, so it holds the GIL and tf.data's
threads cannot run it in parallel. One `tf.numpy_function` per batch keeps tf.data's per-image
overhead out; a pool of worker processes (`augment_workers`) runs those batches in parallel,
while the tf.data threads that wait for them release the GIL. Normalisation is a TensorFlow op
in the graph (no GIL), and the whole split is decoded once into memory (CIFAR-10 is 180 MB).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import socket
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from ml_collections import config_dict

from cifar_flax import augment_worker
from cifar_flax.augment import augment_batch, build_train_transform
from cifar_flax.errors import CifarFlaxError
from cifar_flax.splits import Batch, Shard, Split, epoch_order, image_seeds

DATASET = "cifar10"
# Where tfds fetches CIFAR-10 from when it is not prepared yet: its GCS mirror, then the source.
DOWNLOAD_HOSTS = ("storage.googleapis.com", "www.cs.toronto.edu")


def hide_gpus_from_tensorflow() -> None:
    """tf.data runs on the host: keep TensorFlow from reserving accelerator memory JAX needs."""
    tf.config.set_visible_devices([], "GPU")


def missing_data_message(data_dir: str | None) -> str:
    where = data_dir or "tfds's default data_dir (~/tensorflow_datasets)"
    return (
        f"CIFAR-10 is not prepared in {where} and cannot be downloaded here; pass "
        "--config.data_dir=DIR of a prepared copy (DIR/cifar10/3.0.2), or build one from an "
        "archive you have: python scripts/prepare_cifar10.py --archive PATH --data_dir DIR"
    )


def can_reach(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:443 opens; tfds itself retries for minutes offline."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def prepared_builder(data_dir: str | None, download: bool = True) -> tfds.core.DatasetBuilder:
    """The cifar10 builder for `data_dir`, downloading and preparing it first when allowed."""
    builder = tfds.builder(DATASET, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if not download or not any(can_reach(host) for host in DOWNLOAD_HOSTS):
        raise CifarFlaxError(missing_data_message(data_dir))
    try:
        builder.download_and_prepare()
    except Exception as error:  # any download failure gets the same remedy
        raise CifarFlaxError(f"{missing_data_message(data_dir)} ({error})") from error
    return builder


def load_split(data_dir: str | None, split: str, download: bool = True) -> Split:
    """Decode a split (tfds syntax, e.g. "train[:2048]") into memory."""
    builder = prepared_builder(data_dir, download)
    try:
        dataset = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
        images, labels = tfds.as_numpy(dataset)
    except (ValueError, KeyError, AssertionError) as error:
        first_line = str(error).splitlines()[0]
        raise CifarFlaxError(f"bad split {split!r}: {first_line}") from error
    except tf.errors.OpError as error:  # e.g. a truncated or corrupted TFRecord file
        detail = error.message.split("}}")[-1].strip().splitlines()[0][:200]
        raise CifarFlaxError(
            f"cannot read split {split!r} from {builder.data_dir}: {type(error).__name__} "
            f"({detail}); the prepared files are damaged: prepare them again "
            "(python scripts/prepare_cifar10.py) or pass --config.data_dir of a good copy"
        ) from error
    return Split(
        name=split,
        images=images,
        labels=labels.astype(np.int32),
        class_names=tuple(builder.info.features["label"].names),
    )


class Augmenter:
    """Applies a config's training augmentation to uint8 batches, in `workers` processes.

    With `workers=0` it runs in the calling process. The output depends only on the batch and
    its seed, never on the number of workers. Use it as a context manager to stop the workers.
    """

    def __init__(
        self, augment: config_dict.ConfigDict, mean: Sequence[float], workers: int = 0
    ) -> None:
        self.workers = workers
        self._transform = build_train_transform(augment, mean)  # validates the config here
        self._pool = None
        if workers:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                # A forked child would inherit TensorFlow's and JAX's threads in unknown states.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=augment_worker.initialize,
                initargs=(augment.to_dict(), tuple(mean), os.getpid()),
            )

    def __call__(self, images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        if self._pool is None:
            return augment_batch(self._transform, images, seeds)
        return self._pool.submit(augment_worker.augment, images, seeds).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Augmenter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def augment_workers(configured: int | None) -> int:
    """Worker processes for the augmentation: as configured, or one per CPU core."""
    return os.cpu_count() or 1 if configured is None else configured


def _normalize(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """`A.Normalize(mean, std)` with max_pixel_value 255, for a uint8 batch."""
    mean_255 = tf.constant(mean, tf.float32) * 255.0
    std_255 = tf.constant(std, tf.float32) * 255.0
    return (tf.cast(images, tf.float32) - mean_255) / std_255


def train_batches(
    split: Split,
    config: config_dict.ConfigDict,
    epoch: int,
    augmenter: Augmenter,
    start_batch: int = 0,
    shard: Shard = Shard(),
) -> Iterator[Batch]:
    """One epoch of augmented, normalised numpy batches {"image": float32 NHWC, "label": int32},
    from batch `start_batch` on.

    With several processes each one shuffles the whole split the same way and augments only its
    `shard` of every global batch. The last partial batch is dropped: every step then has one
    shape (one compilation, even sharding over devices), and as the order is reshuffled each
    epoch no image is left out systematically (50,000 images at batch 128 leave out 80 random
    ones per epoch).
    """
    seed, batch_size = config.seed, config.batch_size
    rows = shard.rows(batch_size)
    order = epoch_order(len(split), seed, epoch)

    def augmented_batch(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = order[index * batch_size : (index + 1) * batch_size][rows]
        seeds = image_seeds(batch_size, seed, epoch, int(index))[rows]
        return augmenter(split.images[chosen], seeds), split.labels[chosen]

    def augment(index: tf.Tensor) -> dict[str, tf.Tensor]:
        images, labels = tf.numpy_function(
            augmented_batch, [index], (tf.uint8, tf.int32), stateful=False
        )
        images.set_shape((rows.stop - rows.start, *split.images.shape[1:]))
        labels.set_shape((rows.stop - rows.start,))
        return {"image": images, "label": labels}

    # Batches are gathered from the decoded split by index: a tf.data copy of the split and a
    # shuffle buffer of every image held it two more times, fragmented over 50,000 small
    # allocations (docs/performance.md, "Memory").
    dataset = tf.data.Dataset.range(start_batch, len(split) // batch_size)
    dataset = dataset.map(augment, num_parallel_calls=max(augmenter.workers, 1), deterministic=True)
    return _finish(dataset, config.normalize)


def eval_batches(
    split: Split, batch_size: int, normalize: config_dict.ConfigDict, shard: Shard = Shard()
) -> Iterator[Batch]:
    """Numpy batches of `split` in order (this process's `shard` of each), normalised with
    `normalize` (mean, std); the last partial batch is kept, cut into equal shards and padded up
    to `batch_size`, its padding marked by `mask` (float32, 0)."""
    count = len(split)
    padded = -count % batch_size
    images = np.concatenate([split.images, np.zeros((padded, *split.images.shape[1:]), np.uint8)])
    labels = np.concatenate([split.labels, np.zeros(padded, np.int32)])
    mask = (np.arange(count + padded) < count).astype(np.float32)
    rows = shard.rows(batch_size)
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "mask": mask})
    dataset = dataset.batch(batch_size).map(lambda batch: {k: v[rows] for k, v in batch.items()})
    return _finish(dataset, normalize)


# Batches made ahead of the step: one to hand over, one in the making.
PREFETCH_BATCHES = 2


def _finish(dataset: tf.data.Dataset, normalize: config_dict.ConfigDict) -> Iterator[Batch]:
    """Normalise the images, prefetch, and hand out numpy batches."""

    def normalized(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {**batch, "image": _normalize(batch["image"], normalize.mean, normalize.std)}

    dataset = dataset.map(normalized, num_parallel_calls=tf.data.AUTOTUNE)
    # With autotuning on, the end of an epoch stalled for a large part of the epoch while
    # training ran beside it: the exhausted iterator waits for the autotuner. The pipeline runs
    # far faster than the step, so fixed settings lose nothing (docs/performance.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return tfds.as_numpy(dataset.prefetch(PREFETCH_BATCHES).with_options(options))


def steps_per_epoch(split: Split, batch_size: int) -> int:
    """Full batches in `split` (training drops the last partial one), at least one."""
    steps = len(split) // batch_size
    if steps == 0:
        raise CifarFlaxError(
            f"train split {split.name!r} has {len(split)} images, fewer than one batch of "
            f"{batch_size}"
        )
    return steps


def channel_stats(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the split's pixels, on the 0-1 scale."""
    pixels = split.images.reshape(-1, 3).astype(np.float64) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


def class_counts(split: Split) -> np.ndarray:
    return np.bincount(split.labels, minlength=len(split.class_names))
