"""How one run spreads over processes and devices: joining the other processes, each process's
share of a global batch, and assembling those shares into arrays over every device."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from cifar_flax import splits
from cifar_flax.errors import CifarFlaxError, first_line

# Set by the schedulers jax.distributed detects by itself, when they start several processes.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Join the other processes of a multi-process run, when there are any.

    Explicit settings win; otherwise a Slurm or Open MPI job of several tasks, or a multi-host
    Cloud TPU (several TPU_WORKER_HOSTNAMES), lets jax.distributed find them itself.
    """
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    detected = any(int(os.environ.get(name, "1")) > 1 for name in CLUSTER_SIZE_VARIABLES) or (
        "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    )
    if not (explicit or detected):
        return
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (ValueError, TypeError, RuntimeError) as error:
        raise CifarFlaxError(
            f"cannot start the multi-process run ({first_line(error)}); give "
            "--coordinator_address=HOST:PORT, --num_processes and --process_id, the same "
            "address to every process"
        ) from error


def check_devices(batch_size: int) -> None:
    """Every device gets equal rows; so then does every process, each holding equally many."""
    devices = jax.device_count()
    if batch_size % devices:
        raise CifarFlaxError(
            f"batch_size {batch_size} must be a multiple of the {devices} devices it is split over"
        )


def process_shard() -> splits.Shard:
    """This process's share of every global batch."""
    return splits.Shard(jax.process_index(), jax.process_count())


def global_batches(sharding: jax.sharding.Sharding) -> Callable[[splits.Batch], Any]:
    """Assemble each process's rows into global arrays split over all devices."""
    return lambda batch: jax.tree.map(
        lambda rows: jax.make_array_from_process_local_data(sharding, rows), batch
    )
