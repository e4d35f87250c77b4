"""The run's per-epoch records: WORKDIR/metrics.jsonl, TensorBoard scalars, the epoch line and
the training curves drawn from them.

A record's held-out figures are `eval_*`, with `eval_split` naming the split they come from:
the test set, or a validation slice of the training split (printed as "val").
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import tensorflow as tf

from cifar_flax import plots
from cifar_flax.config_lib import is_validation

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
# Records of earlier versions named the held-out figures after the test set whatever the split.
RENAMED_KEYS = {
    "test_loss": "eval_loss",
    "test_accuracy": "eval_accuracy",
    "test_correct": "eval_correct",
    "test_count": "eval_count",
}


def is_chief() -> bool:
    """The one process that prints and writes metrics, curves and reports."""
    return jax.process_index() == 0


def held_out_name(eval_split: str) -> str:
    """What to call the evaluation split: "val" when it is held out of the training split."""
    return "val" if is_validation(eval_split) else "test"


def device_description() -> str:
    """Where the run trains, for its records: e.g. "1 x NVIDIA H100 80GB HBM3", "cpu, 2 cores"."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        return f"cpu, {os.cpu_count()} cores"
    return f"{len(devices)} x {devices[0].device_kind}"


def upgrade_record(record: dict[str, Any], eval_split: str) -> dict[str, Any]:
    """A record of any version with the current keys."""
    renamed = {RENAMED_KEYS.get(key, key): value for key, value in record.items()}
    return {**renamed, "eval_split": renamed.get("eval_split", eval_split)}


def read_metrics(workdir: str | pathlib.Path, eval_split: str = "test") -> list[dict[str, Any]]:
    """The per-epoch records of the run in `workdir` (none before its first epoch).

    `eval_split` names the held-out split of records written before they carried it.
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [upgrade_record(json.loads(line), eval_split) for line in lines]


def format_epoch(record: dict[str, Any], num_epochs: int) -> str:
    """The epoch's line on the console."""
    return (
        f"epoch {record['epoch']:3d}/{num_epochs}  "
        f"train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:6.2f}%  "
        f"{held_out_name(record['eval_split'])} loss {record['eval_loss']:.4f} "
        f"acc {100 * record['eval_accuracy']:6.2f}%  "
        f"lr {record['learning_rate']:.2e}  {record['epoch_seconds']:6.1f}s  "
        f"{record['train_images_per_second']:6.0f} img/s"
    )


class MetricsLog:
    """Appends each epoch's record to metrics.jsonl and TensorBoard and prints it (chief only)."""

    def __init__(self, workdir: pathlib.Path, resume_after_epoch: int, eval_split: str) -> None:
        self.path = workdir / METRICS_FILE
        self.eval_split = eval_split
        self.writer = None
        if is_chief():
            # Epochs logged after the checkpoint we resume from are about to be trained again.
            kept = [record for record in self.records() if record["epoch"] <= resume_after_epoch]
            self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))
            self.writer = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path.parent, self.eval_split)

    def write(self, record: dict[str, Any], num_epochs: int) -> None:
        if self.writer is None:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=record["epoch"]):
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    tf.summary.scalar(key, value)
        self.writer.flush()
        print(format_epoch(record, num_epochs), flush=True)

    def save_curves(self, title: str) -> list[dict[str, Any]]:
        """Draw WORKDIR/curves.png from all the run's records (chief only); return them."""
        records = self.records()
        if records and self.writer is not None:
            held_out = held_out_name(self.eval_split)
            plots.save_training_curves(records, self.path.parent / CURVES_FILE, title, held_out)
        return records
