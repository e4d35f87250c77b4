r"""Train, evaluate or summarize a seed network (or your own) on CIFAR-10.

    python -m cifar_flax.main --config=configs/s7.py                  # trains into runs/s7
    python -m cifar_flax.main --config=configs/s7.py --mode=eval
    python -m cifar_flax.main --config=configs/s7.py:s7_dwsep --mode=summary
    python -m cifar_flax.main --config=configs/s7.py --mode=data --workdir=runs/look

Any config key can be overridden, e.g. --config.model=s6_grouped --config.num_epochs=5, or
--config.model=examples/my_net.py:MyNet for a network of your own.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_dict, config_flags

from cifar_flax.console import quiet_library_logs
from cifar_flax.errors import CifarFlaxError, RunInterruptedError
from cifar_flax.host_memory import restart_reusing_freed_memory
from cifar_flax.models import create_model
from cifar_flax.summary import format_summary, summarize

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file (configs/*.py[:variant])."
)
flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints, metrics and figures. Default: runs/NAME, from the config file, "
    "its variant and an overridden model (configs/s7.py:s7_dwsep,seed: runs/s7-s7_dwsep-seed).",
)
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "summary", "data"],
    "train; eval a checkpoint; summary: layers and receptive field; data: dataset facts and "
    "a grid of augmented samples.",
)
flags.DEFINE_enum(
    "checkpoint", "best", ["best", "latest"], "With --mode=eval: which checkpoint to evaluate."
)
flags.DEFINE_string(
    "coordinator_address",
    os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "host:port of process 0 when training over several processes (jax.distributed); TPU pods, "
    "Slurm and Open MPI need none of the three flags. Default: $JAX_COORDINATOR_ADDRESS.",
)
flags.DEFINE_integer(
    "num_processes",
    int(os.environ.get("JAX_NUM_PROCESSES", 0)) or None,
    "How many processes train together. Default: $JAX_NUM_PROCESSES.",
)
flags.DEFINE_integer(
    "process_id",
    int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None,
    "This process's index, 0 to num_processes - 1. Default: $JAX_PROCESS_ID.",
)
SAMPLE_GRID = "augmented_samples.png"
DEFAULT_RUNS = "runs"
# Set by the schedulers jax.distributed detects by itself, when they start several processes.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
flags.mark_flag_as_required("config")


def default_workdir(config_spec: str, model_override: str | None = None) -> pathlib.Path:
    """runs/NAME for a run without --workdir: one directory per config file, variant and model."""
    path, _, variant = config_spec.partition(":")
    parts = [pathlib.Path(path).stem, *(token for token in variant.split(",") if token)]
    if model_override:
        parts.append(model_override.rpartition(":")[2].removesuffix(".py").rpartition("/")[2])
    return pathlib.Path(DEFAULT_RUNS) / "-".join(parts)


def run(
    mode: str, config: config_dict.ConfigDict, workdir: str | None, checkpoint: str = "best"
) -> None:
    """Carry out `mode`; raises CifarFlaxError for anything the user should fix."""
    if mode == "summary":
        print(format_summary(summarize(create_model(config.model), config.model)))
        return
    if workdir is None:
        raise CifarFlaxError(f"--mode={mode} writes to a directory: pass --workdir=DIR")
    if mode == "data":
        describe_data(config, pathlib.Path(workdir))
        return
    from cifar_flax import train  # TensorFlow loads only when data is needed

    if mode == "train":
        train.train_and_evaluate(config, workdir)
    else:
        train.evaluate(config, workdir, checkpoint)


def describe_data(config: config_dict.ConfigDict, workdir: pathlib.Path) -> None:
    """Print class counts and pixel statistics; save a grid of augmented training images."""
    from cifar_flax import input_pipeline, plots  # TensorFlow loads only when data is needed
    from cifar_flax.augment import image_seeds

    input_pipeline.hide_gpus_from_tensorflow()
    train = input_pipeline.load_split(config.data_dir, config.train_split, config.download)
    test = input_pipeline.load_split(config.data_dir, config.eval_split, config.download)
    width = max(map(len, train.class_names))
    print(f"{'class':{width}s}  {train.name:>12s}  {test.name:>12s}")
    counts = zip(input_pipeline.class_counts(train), input_pipeline.class_counts(test), strict=True)
    for name, (n_train, n_test) in zip(train.class_names, counts, strict=True):
        print(f"{name:{width}s}  {n_train:12,d}  {n_test:12,d}")
    print(f"{'total':{width}s}  {len(train):12,d}  {len(test):12,d}")
    mean, std = input_pipeline.channel_stats(train)
    fmt = lambda values: ", ".join(f"{v:.4f}" for v in values)  # noqa: E731
    print(f"Train mean: ({fmt(mean)}) std: ({fmt(std)})")
    count = min(32, len(train))
    augmenter = input_pipeline.Augmenter(config.augment, config.normalize.mean)
    samples = augmenter(train.images[:count], image_seeds(count, config.seed))
    path = plots.save_image_grid(
        samples,
        [train.class_names[label] for label in train.labels[:count]],
        workdir / SAMPLE_GRID,
        suptitle=f"{config.model}: augmented training samples ({train.name})",
    )
    print(f"Wrote {path}")


def initialize_distributed(
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
    import jax

    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (ValueError, TypeError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CifarFlaxError(
            f"cannot start the multi-process run ({first_line}); give --coordinator_address="
            "HOST:PORT, --num_processes and --process_id, the same address to every process"
        ) from error


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a mistake in a flag or a config override is one line of error."""
    try:
        args = FLAGS(argv)
        FLAGS.config.get("model")  # config_flags reports a config file it could not load only here
        return args
    except (flags.Error, OSError) as error:
        # config_flags embeds the config file's own traceback; its last line says what went wrong.
        last = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
        sys.exit(f"error: {last.removeprefix('ValueError: ')} (see --helpshort)")
    except AttributeError as error:  # ml_collections' answer to --config.KEY for a missing KEY
        cause = error.args[0]
        detail = cause.args[0] if isinstance(cause, KeyError) else str(cause)
        sys.exit(f"error: unknown config key {detail.replace(chr(10), '; ')}")


def chosen_workdir() -> str | None:
    """--workdir, or the default one (announced first, so that the user knows where to look)."""
    if FLAGS.workdir or FLAGS.mode == "summary":
        return FLAGS.workdir
    overrides = config_flags.get_override_values(FLAGS["config"])
    workdir = default_workdir(
        config_flags.get_config_filename(FLAGS["config"]), overrides.get("model")
    )
    print(f"Workdir: {workdir} (the default for this config; --workdir=DIR to choose)", flush=True)
    return str(workdir)


def main(argv: Sequence[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if FLAGS.mode in ("train", "eval"):
            initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        run(FLAGS.mode, FLAGS.config, chosen_workdir(), FLAGS.checkpoint)
    except RunInterruptedError as stopped:  # after saving a checkpoint: not a mistake
        print(stopped, file=sys.stderr)
        sys.exit(stopped.exit_code)
    except CifarFlaxError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: stopped without saving; the checkpoints saved before are kept")


if __name__ == "__main__":
    restart_reusing_freed_memory()
    app.run(main, flags_parser=parse_flags)
