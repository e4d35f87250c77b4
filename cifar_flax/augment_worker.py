"""The side of the augmentation that runs in the input pipeline's worker processes.

A worker unpickles its functions from this module, so this module's imports are all that a
worker loads: the transforms and numpy, not TensorFlow or JAX, which would cost each worker
hundreds of MB (docs/performance.md).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence

import numpy as np
from ml_collections import config_dict

from cifar_flax.augment import augment_batch, build_train_transform

_transform = None  # one transform per worker process, built by `initialize`


def initialize(augment: dict, mean: Sequence[float], parent: int) -> None:
    """A worker's start: build its transform; leave when the `parent` process is gone."""
    # Ctrl-C reaches the whole process group: the trainer saves a checkpoint and closes the
    # pool; a worker interrupted mid-batch would only print a traceback and break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    global _transform
    _transform = build_train_transform(config_dict.ConfigDict(augment), mean)


def _exit_with_parent(parent: int) -> None:
    """A killed training process cannot stop its pool: its workers leave when it is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def augment(images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    return augment_batch(_transform, images, seeds)
