"""What the command-line programs print, and what they keep quiet."""

import logging
import os

from absl import flags
from absl import logging as absl_logging


def quiet_library_logs() -> None:
    """Show only warnings from the libraries' logs, unless the user asked with --verbosity.

    absl shows INFO by default, so every run would print JAX's search for a TPU and each of
    tfds's file openings, and TensorFlow's C++ side (here and in the augmentation workers, which
    inherit the environment) its CPU features. Call it before TensorFlow is imported.
    """
    # TensorFlow only shuffles, batches and normalises here, so its oneDNN kernels gain nothing;
    # with them on, every process prints a notice about them that no log level hides.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if not flags.FLAGS["verbosity"].present:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        logging.getLogger("absl").addFilter(hide_unranked_save_warning)


def hide_unranked_save_warning(record: logging.LogRecord) -> bool:
    """Drop orbax's warning that a checkpoint was saved without metrics: the one saved where a
    signal stopped a run mid-epoch has no test accuracy by design (LatestN keeps it)."""
    return "did not provide metrics" not in record.getMessage()
