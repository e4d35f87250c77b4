"""Training and checkpoint evaluation: config -> data -> model -> steps -> metrics/checkpoints."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from ml_collections import config_dict
from tqdm import tqdm

from cifar_flax import checkpoints, input_pipeline, plots
from cifar_flax.config_lib import validate
from cifar_flax.errors import CifarFlaxError
from cifar_flax.models import create_model
from cifar_flax.steps import (
    TrainState,
    create_train_state,
    data_sharding,
    jit_eval_step,
    jit_train_step,
    make_mesh,
    pad_batch,
    replicated,
)

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
EVAL_FILE = "eval.json"
MISCLASSIFIED_FILE = "misclassified.png"
LOSS_CHECK_EVERY = 20  # steps between reading the losses back (progress bar, NaN check)


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float
    correct: int
    count: int
    predictions: np.ndarray
    labels: np.ndarray

    @property
    def accuracy(self) -> float:
        return self.correct / self.count


def evaluate_split(
    eval_step: Callable[..., Any],
    variables: Any,
    split: input_pipeline.Split,
    batch_size: int,
    normalize: config_dict.ConfigDict,
    sharding: jax.sharding.Sharding,
) -> EvalResult:
    """Loss and accuracy of `variables` on the whole split (the last batch padded, masked)."""
    loss_sum, correct, predictions = 0.0, 0, []
    for batch in input_pipeline.eval_batches(split, batch_size, normalize):
        count = len(batch["label"])
        metrics = eval_step(variables, jax.device_put(pad_batch(batch, batch_size), sharding))
        metrics = jax.device_get(metrics)
        loss_sum += float(metrics["loss_sum"])
        correct += int(metrics["correct"])
        predictions.append(metrics["predictions"][:count])
    return EvalResult(
        loss=loss_sum / len(split),
        correct=correct,
        count=len(split),
        predictions=np.concatenate(predictions),
        labels=split.labels,
    )


class NonFiniteLossError(CifarFlaxError):
    """The loss became NaN or infinite; the run stops before saving the broken state."""


def check_finite(losses: list[jax.Array], first_step: int, epoch: int) -> np.ndarray:
    """Read the losses back; stop at the first non-finite one."""
    values = np.asarray(jax.device_get(losses), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        step = first_step + int(bad[0])
        raise NonFiniteLossError(
            f"the loss became {values[bad[0]]} at step {step} (epoch {epoch}); training stopped "
            "and the checkpoints of earlier epochs are kept. Lower the learning rate or "
            "clip the gradients (--config.grad_clip_value)"
        )
    return values


def train_epoch(
    state: TrainState,
    train_step: Callable[..., Any],
    batches: Iterable[dict[str, np.ndarray]],
    steps: int,
    epoch: int,
    sharding: jax.sharding.Sharding,
) -> tuple[TrainState, dict[str, float]]:
    """One pass over `batches`; returns the new state and the epoch's mean train metrics."""
    losses, corrects, learning_rate = [], [], None
    first_step = int(state.step)
    show_bar = sys.stderr.isatty()
    with tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not show_bar) as bar:
        for index, batch in enumerate(batches):
            state, metrics = train_step(state, jax.device_put(batch, sharding))
            losses.append(metrics["loss"])
            corrects.append(metrics["correct"])
            learning_rate = metrics["learning_rate"]
            bar.update()
            if (index + 1) % LOSS_CHECK_EVERY == 0:
                first_recent = first_step + index + 1 - LOSS_CHECK_EVERY
                recent = check_finite(losses[-LOSS_CHECK_EVERY:], first_recent, epoch)
                bar.set_postfix(loss=f"{recent.mean():.4f}")
    loss_values = check_finite(losses, first_step, epoch)
    images = len(losses) * int(batch["label"].shape[0])
    return state, {
        "train_loss": float(loss_values.mean()),
        "train_accuracy": float(np.sum(jax.device_get(corrects))) / images,
        "learning_rate": float(learning_rate),
        "train_images": images,
    }


class MetricsLog:
    """Per-epoch records in WORKDIR/metrics.jsonl and TensorBoard event files."""

    def __init__(self, workdir: pathlib.Path, resume_after_epoch: int) -> None:
        self.path = workdir / METRICS_FILE
        # Epochs logged after the checkpoint we resume from are about to be trained again.
        kept = [record for record in self.records() if record["epoch"] <= resume_after_epoch]
        self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))
        self.writer = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=record["epoch"]):
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    tf.summary.scalar(key, value)
        self.writer.flush()


def format_epoch(record: dict[str, Any], num_epochs: int) -> str:
    return (
        f"epoch {record['epoch']:3d}/{num_epochs}  "
        f"train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:6.2f}%  "
        f"test loss {record['test_loss']:.4f} acc {100 * record['test_accuracy']:6.2f}%  "
        f"lr {record['learning_rate']:.2e}  {record['epoch_seconds']:6.1f}s  "
        f"{record['train_images_per_second']:6.0f} img/s"
    )


def prepare_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise CifarFlaxError(f"cannot write to --workdir={path}: {error.strerror}") from error
    return path


def check_devices(batch_size: int) -> None:
    devices = jax.device_count()
    if batch_size % devices:
        raise CifarFlaxError(
            f"batch_size {batch_size} must be a multiple of the {devices} devices it is split over"
        )


def train_and_evaluate(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train `config.model`, evaluating and checkpointing after every epoch; resume if possible.

    Returns the last epoch's record (what metrics.jsonl holds).
    """
    validate(config)
    model = create_model(config.model)
    check_devices(config.batch_size)
    workdir = prepare_workdir(workdir)
    input_pipeline.hide_gpus_from_tensorflow()
    train_split = input_pipeline.load_split(config.data_dir, config.train_split, config.download)
    eval_split = input_pipeline.load_split(config.data_dir, config.eval_split, config.download)
    steps = input_pipeline.steps_per_epoch(train_split, config.batch_size)
    if steps == 0:
        raise CifarFlaxError(
            f"train split {config.train_split!r} has {len(train_split)} images, fewer than "
            f"one batch of {config.batch_size}"
        )

    mesh = make_mesh()
    batch_sharding, state_sharding = data_sharding(mesh), replicated(mesh)
    state = jax.device_put(create_train_state(model, config, steps), state_sharding)
    manager = checkpoints.open_manager(workdir)
    start_epoch = manager.latest_step() or 0
    if start_epoch:
        meta = checkpoints.read_meta(manager, start_epoch)
        if meta["model"] != config.model:
            raise CifarFlaxError(
                f"{checkpoints.checkpoint_dir(workdir)} holds checkpoints of {meta['model']}, "
                f"not {config.model}; use another --workdir to train {config.model}"
            )
        state = checkpoints.restore_state(manager, start_epoch, state)
        print(f"Resuming from the checkpoint of epoch {start_epoch} in {workdir}", flush=True)

    train_step = jit_train_step(mesh, config.l1)
    eval_step = jit_eval_step(mesh, model.apply)
    log = MetricsLog(workdir, start_epoch)
    record: dict[str, Any] = {}
    workers = (
        input_pipeline.default_workers()
        if config.augment_workers is None
        else config.augment_workers
    )
    try:
        with input_pipeline.Augmenter(config.augment, config.normalize.mean, workers) as augment:
            for epoch in range(start_epoch + 1, config.num_epochs + 1):
                started = time.perf_counter()
                batches = input_pipeline.train_batches(train_split, config, epoch - 1, augment)
                state, train_metrics = train_epoch(
                    state, train_step, batches, steps, epoch, batch_sharding
                )
                train_seconds = time.perf_counter() - started
                result = evaluate_split(
                    eval_step,
                    {"params": state.params, "batch_stats": state.batch_stats},
                    eval_split,
                    config.batch_size,
                    config.normalize,
                    batch_sharding,
                )
                record = {
                    "epoch": epoch,
                    "step": int(state.step),
                    **train_metrics,
                    "test_loss": result.loss,
                    "test_accuracy": result.accuracy,
                    "test_correct": result.correct,
                    "test_count": result.count,
                    "epoch_seconds": time.perf_counter() - started,
                    "train_images_per_second": train_metrics["train_images"] / train_seconds,
                }
                log.write(record)
                print(format_epoch(record, config.num_epochs), flush=True)
                checkpoints.save(manager, epoch, state, checkpoint_meta(config, record))
    finally:
        manager.wait_until_finished()
        manager.close()
    records = log.records()
    if records:
        plots.save_training_curves(records, workdir / CURVES_FILE, title=config.model)
    if not record:
        print(f"Nothing to do: {workdir} already holds all {config.num_epochs} epochs")
        record = records[-1] if records else {}
    return record


def checkpoint_meta(config: config_dict.ConfigDict, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": config.model,
        "epoch": record["epoch"],
        "step": record["step"],
        "test_accuracy": record["test_accuracy"],
        "eval_split": config.eval_split,
        "normalize": {"mean": list(config.normalize.mean), "std": list(config.normalize.std)},
        "config": json.loads(config.to_json_best_effort()),
    }


def evaluate(config: config_dict.ConfigDict, workdir: str, which: str = "best") -> dict[str, Any]:
    """Evaluate the best (or latest) checkpoint in `workdir` on `config.eval_split`.

    Only the model name and the normalisation come from the checkpoint; the data location and
    split come from `config`.
    """
    manager = checkpoints.open_manager(workdir, create=False)
    try:
        step = checkpoints.choose_step(manager, which, workdir)
        meta = checkpoints.read_meta(manager, step)
        model = create_model(meta["model"])
        template = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)))
        mesh = make_mesh()
        template = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated(mesh)),
            dict(template),
        )
        variables = checkpoints.restore_model(manager, step, template)
    finally:
        manager.close()
    check_devices(config.batch_size)
    input_pipeline.hide_gpus_from_tensorflow()
    split = input_pipeline.load_split(config.data_dir, config.eval_split, config.download)
    normalize = config_dict.ConfigDict(meta["normalize"])
    result = evaluate_split(
        jit_eval_step(mesh, model.apply),
        variables,
        split,
        config.batch_size,
        normalize,
        data_sharding(mesh),
    )
    report = eval_report(result, split.class_names, meta, which, step)
    print_report(report, split.class_names)
    workdir = pathlib.Path(workdir)
    (workdir / EVAL_FILE).write_text(json.dumps(report, indent=2) + "\n")
    wrong = np.flatnonzero(result.predictions != result.labels)[:32]
    plots.save_image_grid(
        split.images[wrong],
        [
            f"{split.class_names[result.labels[i]]} -> {split.class_names[result.predictions[i]]}"
            for i in wrong
        ],
        workdir / MISCLASSIFIED_FILE,
        suptitle=f"{meta['model']}: misclassified ({split.name}), true -> predicted",
    )
    return report


def eval_report(
    result: EvalResult,
    class_names: tuple[str, ...],
    meta: dict[str, Any],
    which: str,
    step: int,
) -> dict[str, Any]:
    classes = len(class_names)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (result.labels, result.predictions), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "model": meta["model"],
        "checkpoint": which,
        "epoch": step,
        "accuracy": result.accuracy,
        "correct": result.correct,
        "count": result.count,
        "loss": result.loss,
        "per_class_accuracy": dict(zip(class_names, per_class.tolist(), strict=True)),
        "confusion_matrix": confusion.tolist(),
    }


def print_report(report: dict[str, Any], class_names: tuple[str, ...]) -> None:
    print(f"Checkpoint: {report['checkpoint']} (epoch {report['epoch']}) of {report['model']}")
    print(f"Test accuracy: {100 * report['accuracy']:.2f}% ({report['correct']}/{report['count']})")
    print("Per-class accuracy:")
    for name, accuracy in report["per_class_accuracy"].items():
        print(f"  {name:12s} {100 * accuracy:6.2f}%")
    short = [name[:5] for name in class_names]
    print("Confusion matrix (rows: true, columns: predicted):")
    print("       " + " ".join(f"{name:>5s}" for name in short))
    for name, row in zip(short, report["confusion_matrix"], strict=True):
        print(f"{name:>6s} " + " ".join(f"{count:5d}" for count in row))
