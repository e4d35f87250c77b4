"""What the command-line programs print, and what they keep quiet."""

import logging

from absl import flags
from absl import logging as absl_logging


def quiet_library_logs() -> None:
    """Show only warnings from the libraries' logs, unless the user asked with --verbosity.

    absl shows INFO by default, so every run would print JAX's search for a TPU and each of
    tfds's file openings.
    """
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
