r"""Train, evaluate or summarize a seed network (or your own) on CIFAR-10.

    python -m cifar_flax.main --config=configs/s7.py                  # trains into runs/s7
    python -m cifar_flax.main --config=configs/s7.py --mode=eval
    python -m cifar_flax.main --config=configs/s7.py:s7_dwsep --mode=summary
    python -m cifar_flax.main --config=configs/s7.py --mode=data --workdir=runs/look
    python -m cifar_flax.main --config=configs/s7.py --mode=lr_find    # the LR range test

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

# Each augmentation worker process imports this module when it starts (multiprocessing's
# spawn), so JAX and TensorFlow are imported only inside the functions that need them.

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
    ["train", "eval", "summary", "data", "lr_find"],
    "train; eval a checkpoint; summary: layers and receptive field (rf.png with --workdir); "
    "data: dataset facts and "
    "a grid of augmented samples; lr_find: the learning-rate range test.",
)
flags.DEFINE_enum(
    "checkpoint",
    "latest",
    ["latest", "best"],
    "With --mode=eval: which checkpoint to evaluate; best (by validation accuracy) exists only "
    "for a run evaluated on a validation split (configs/...:val).",
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
flags.mark_flag_as_required("config")


def run(
    mode: str, config: config_dict.ConfigDict, workdir: str | None, checkpoint: str = "latest"
) -> None:
    """Carry out `mode`; raises CifarFlaxError for anything the user should fix."""
    if mode == "summary":
        from cifar_flax.receptive_field import summarize_and_draw

        summarize_and_draw(config, workdir)
        return
    if workdir is None:
        raise CifarFlaxError(f"--mode={mode} writes to a directory: pass --workdir=DIR")
    if mode == "data":
        from cifar_flax.data_report import describe_data

        describe_data(config, pathlib.Path(workdir))
    elif mode == "lr_find":
        from cifar_flax.lr_find import lr_find

        lr_find(config, workdir)
    elif mode == "train":
        from cifar_flax.train import train_and_evaluate

        train_and_evaluate(config, workdir)
    else:
        from cifar_flax.evaluation import evaluate

        evaluate(config, workdir, checkpoint)


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
    from cifar_flax.workdir import default_workdir

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
        if FLAGS.mode in ("train", "eval", "lr_find"):
            from cifar_flax import distributed

            distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
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
