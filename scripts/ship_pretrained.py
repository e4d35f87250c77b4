r"""Ship a finished training run as a pretrained model: its final checkpoint, logs and figures.

    python scripts/ship_pretrained.py --workdir=runs/s7 --dest=pretrained/s7 \
        [--log=runs/s7.log] [--data_dir=../shared/data/tfds]

Copies the final epoch's checkpoint, metrics.jsonl, config.json, curves.png and the training
log; then evaluates it on the run's eval split (as `--mode=eval` does: the latest checkpoint),
which writes eval.json and misclassified.png, and writes results.json: what the README results
table lists. It prints that table's row; add DEST and its config to pretrained/shipped.json.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
from typing import Any

from absl import app, flags
from ml_collections import config_dict

from cifar_flax import checkpoints
from cifar_flax.console import quiet_library_logs
from cifar_flax.errors import CifarFlaxError
from cifar_flax.models import create_model
from cifar_flax.summary import summarize
from cifar_flax.workdir import CONFIG_FILE

RESULTS_FILE = "results.json"
LOG_FILE = "train.log"


def final_checkpoint(workdir: pathlib.Path) -> tuple[int, dict[str, Any]]:
    """The step and meta of the run's last checkpoint, which must end its last epoch."""
    manager = checkpoints.open_manager(workdir, create=False)
    try:
        step = checkpoints.choose_step(manager, "latest", workdir)
        meta = checkpoints.read_meta(manager, step)
    finally:
        manager.close()
    planned = meta["config"]["num_epochs"]
    if meta["epoch"] != planned or meta["epoch_steps"]:
        raise CifarFlaxError(
            f"the run in {workdir} has not finished ({meta['epoch']} of {planned} epochs); "
            "run its training command again to finish it first"
        )
    return step, meta


def copy_run(
    workdir: pathlib.Path,
    dest: pathlib.Path,
    step: int,
    log: pathlib.Path | None,
    run_files: tuple[str, ...],
) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise CifarFlaxError(f"{dest} is not empty; ship to a new directory")
    if log is not None and not log.is_file():
        raise CifarFlaxError(f"--log={log} is not a file")
    shutil.copytree(
        checkpoints.checkpoint_dir(workdir) / str(step),
        checkpoints.checkpoint_dir(dest) / str(step),
    )
    for name in run_files:
        shutil.copy2(workdir / name, dest / name)
    if log is not None:
        shutil.copy2(log, dest / LOG_FILE)


def recipe(config: dict[str, Any]) -> str:
    """The optimisation settings in one line, e.g. "SGD nesterov, onecycle to 0.1, bs 128"."""
    optimizer = config["optimizer"].upper() if config["optimizer"] == "sgd" else "Adam"
    if config["optimizer"] == "sgd" and config["nesterov"]:
        optimizer += " nesterov"
    to = "to " if config["lr_schedule"] == "onecycle" else ""
    parts = [optimizer, f"{config['lr_schedule']} {to}{config['learning_rate']:g}"]
    if config["weight_decay"]:
        kernels = "" if config.get("decay_norm_and_bias", True) else " on kernels"
        parts.append(f"wd {config['weight_decay']:g}{kernels}")
    if config.get("label_smoothing"):
        parts.append(f"label smoothing {config['label_smoothing']:g}")
    if config["grad_clip_value"]:
        parts.append(f"clip {config['grad_clip_value']:g}")
    parts.append(f"bs {config['batch_size']}")
    if config.get("eval_flip"):
        parts.append("flip at test")
    return ", ".join(parts)


def results(
    meta: dict[str, Any], report: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    summary = summarize(create_model(meta["model"]), meta["model"])
    return {
        "model": meta["model"],
        "params": summary.total_params,
        "receptive_field": summary.receptive_field,
        "recipe": recipe(meta["config"]),
        "epochs": meta["epoch"],
        "eval_split": meta["eval_split"],
        "final_accuracy": report["accuracy"],
        "per_class_accuracy": report["per_class_accuracy"],
        "train_seconds": sum(record["epoch_seconds"] for record in records),
        "ran_on": sorted({record.get("device", "unrecorded") for record in records}),
    }


def table_row(dest: pathlib.Path, shipped: dict[str, Any]) -> str:
    minutes = shipped["train_seconds"] / 60
    cells = [
        f"`{dest}`",
        shipped["model"],
        f"{shipped['params']:,}",
        str(shipped["receptive_field"]),
        shipped["recipe"],
        str(shipped["epochs"]),
        f"**{100 * shipped['final_accuracy']:.2f}%**",
        f"{minutes:.0f} min",
        "; ".join(shipped["ran_on"]),
    ]
    return "| " + " | ".join(cells) + " |"


def ship(
    workdir: pathlib.Path, dest: pathlib.Path, log: pathlib.Path | None, data_dir: str | None
) -> dict[str, Any]:
    # Imported here, not above: they load TensorFlow, which main does after quiet_library_logs.
    from cifar_flax import evaluation, metrics

    step, meta = final_checkpoint(workdir)
    created = not dest.exists()
    run_files = (metrics.METRICS_FILE, metrics.CURVES_FILE, CONFIG_FILE)
    copy_run(
        workdir, dest, step, log, tuple(name for name in run_files if (workdir / name).exists())
    )
    config = config_dict.ConfigDict(meta["config"])
    config.data_dir = data_dir
    try:
        # As --mode=eval does by default, so that the README's eval command rewrites this
        # eval.json unchanged.
        report = evaluation.evaluate(config, str(dest))
    except CifarFlaxError:
        if created:  # leave no half-shipped model behind; the run itself is untouched
            shutil.rmtree(dest)
        raise
    shipped = results(meta, report, metrics.read_metrics(dest, meta["eval_split"]))
    (dest / RESULTS_FILE).write_text(json.dumps(shipped, indent=2) + "\n")
    return shipped


def define_flags() -> None:
    """Only when run as a script: the tests import this module beside others defining data_dir."""
    flags.DEFINE_string("workdir", None, "The finished run's --workdir.")
    flags.DEFINE_string("dest", None, "Where to ship it, e.g. pretrained/s7 (must be new).")
    flags.DEFINE_string("log", None, "The run's console output, kept as DEST/train.log.")
    flags.DEFINE_string("data_dir", None, "tfds data_dir for the evaluation.")
    flags.mark_flags_as_required(["workdir", "dest"])


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    values = flags.FLAGS
    dest = pathlib.Path(values.dest)
    try:
        shipped = ship(
            pathlib.Path(values.workdir),
            dest,
            None if values.log is None else pathlib.Path(values.log),
            values.data_dir,
        )
    except CifarFlaxError as error:
        sys.exit(f"error: {error}")
    print(table_row(dest, shipped))


if __name__ == "__main__":
    define_flags()
    app.run(main)
