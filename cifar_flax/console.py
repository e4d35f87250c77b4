"""What the command-line programs print, and what they keep quiet."""

import logging


def silence_backend_probe() -> None:
    """JAX logs at INFO (which absl shows) that it found no TPU on every CPU/GPU start."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
