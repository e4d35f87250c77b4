"""Training and checkpoint evaluation: config -> data -> model -> steps -> metrics/checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils
from ml_collections import config_dict
from tqdm import tqdm

from cifar_flax import checkpoints, input_pipeline, plots
from cifar_flax.config_lib import validate
from cifar_flax.errors import CifarFlaxError, RunInterruptedError
from cifar_flax.models import create_model
from cifar_flax.models.external import canonical
from cifar_flax.steps import (
    TrainState,
    create_train_state,
    data_sharding,
    jit_eval_step,
    jit_train_step,
    make_mesh,
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
    to_global: Callable[[input_pipeline.Batch], Any],
) -> EvalResult:
    """Loss and accuracy of `variables` on the whole split (each process feeding its shard)."""
    loss_sum, correct, predictions = 0.0, 0, []
    for batch in input_pipeline.eval_batches(split, batch_size, normalize, process_shard()):
        metrics = jax.device_get(eval_step(variables, to_global(batch)))
        loss_sum += float(metrics["loss_sum"])
        correct += int(metrics["correct"])
        predictions.append(metrics["predictions"])
    return EvalResult(
        loss=loss_sum / len(split),
        correct=correct,
        count=len(split),
        predictions=np.concatenate(predictions)[: len(split)],
        labels=split.labels,
    )


def process_shard() -> input_pipeline.Shard:
    """This process's share of every global batch."""
    return input_pipeline.Shard(jax.process_index(), jax.process_count())


def global_batches(sharding: jax.sharding.Sharding) -> Callable[[input_pipeline.Batch], Any]:
    """Assemble each process's rows into global arrays split over all devices."""
    return lambda batch: jax.tree.map(
        lambda rows: jax.make_array_from_process_local_data(sharding, rows), batch
    )


def device_description() -> str:
    """Where the run trains, for its records: e.g. "1 x NVIDIA H100 80GB HBM3", "cpu, 2 cores"."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        return f"cpu, {os.cpu_count()} cores"
    return f"{len(devices)} x {devices[0].device_kind}"


def is_chief() -> bool:
    """The one process that prints and writes metrics, curves and reports."""
    return jax.process_index() == 0


class NonFiniteLossError(CifarFlaxError):
    """The loss became NaN or infinite; the run stops before saving the broken state."""


class StopSignals:
    """SIGINT/SIGTERM ask the run to stop after the current step; a second SIGINT quits at once.

    With several processes the request is shared every SYNC_EVERY steps and at epoch ends, so
    that all of them stop after the same step and save one checkpoint together.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    SYNC_EVERY = 20

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
            "(Ctrl-C again quits without saving)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, step_index: int | None = None) -> bool:
        """Whether to stop now; `step_index` None marks an epoch boundary (always a sync point)."""
        if jax.process_count() == 1:
            return self.received is not None
        if step_index is not None and (step_index + 1) % self.SYNC_EVERY:
            return False
        local = np.int32(self.received or 0)
        signals = multihost_utils.process_allgather(local)
        self.received = self.received or int(np.max(signals)) or None
        return self.received is not None


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """The steps of one epoch done so far: what a mid-epoch checkpoint needs to resume exactly."""

    losses: tuple[float, ...] = ()
    corrects: tuple[int, ...] = ()

    @property
    def batches(self) -> int:
        return len(self.losses)


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
    batches: Iterable[input_pipeline.Batch],
    steps: int,
    epoch: int,
    to_global: Callable[[input_pipeline.Batch], Any],
    done: EpochProgress,
    stop: StopSignals,
) -> tuple[TrainState, EpochProgress, float | None]:
    """Train on `batches` (the rest of the epoch after `done`) until they end or `stop` asks.

    Returns the new state, the epoch's progress and the last step's learning rate.
    """
    losses, corrects, learning_rate = [], [], None
    first_step = int(state.step)
    show_bar = sys.stderr.isatty() and is_chief()
    with tqdm(
        total=steps, initial=done.batches, desc=f"epoch {epoch}", leave=False, disable=not show_bar
    ) as bar:
        for index, batch in enumerate(batches):
            state, metrics = train_step(state, to_global(batch))
            losses.append(metrics["loss"])
            corrects.append(metrics["correct"])
            learning_rate = metrics["learning_rate"]
            bar.update()
            if (index + 1) % LOSS_CHECK_EVERY == 0:
                first_recent = first_step + index + 1 - LOSS_CHECK_EVERY
                recent = check_finite(losses[-LOSS_CHECK_EVERY:], first_recent, epoch)
                bar.set_postfix(loss=f"{recent.mean():.4f}")
            if stop.requested(index):
                break
    progress = EpochProgress(
        done.losses + tuple(check_finite(losses, first_step, epoch).tolist()),
        done.corrects + tuple(int(c) for c in jax.device_get(corrects)),
    )
    return state, progress, None if learning_rate is None else float(learning_rate)


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The per-epoch records of the run in `workdir` (none before its first epoch)."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Per-epoch records in WORKDIR/metrics.jsonl and TensorBoard event files (chief only)."""

    def __init__(self, workdir: pathlib.Path, resume_after_epoch: int) -> None:
        self.path = workdir / METRICS_FILE
        self.writer = None
        if is_chief():
            # Epochs logged after the checkpoint we resume from are about to be trained again.
            kept = [record for record in self.records() if record["epoch"] <= resume_after_epoch]
            self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))
            self.writer = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path.parent)

    def write(self, record: dict[str, Any], num_epochs: int, eval_split: str) -> None:
        if self.writer is None:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=record["epoch"]):
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    tf.summary.scalar(key, value)
        self.writer.flush()
        print(format_epoch(record, num_epochs, eval_split), flush=True)


def held_out_name(eval_split: str) -> str:
    """What to call the evaluation split: "val" when it is held out of the training split."""
    return "val" if eval_split.startswith("train") else "test"


def format_epoch(record: dict[str, Any], num_epochs: int, eval_split: str) -> str:
    """One line per epoch; the record's test_* keys hold a validation split's figures as "val"."""
    return (
        f"epoch {record['epoch']:3d}/{num_epochs}  "
        f"train loss {record['train_loss']:.4f} acc {100 * record['train_accuracy']:6.2f}%  "
        f"{held_out_name(eval_split)} loss {record['test_loss']:.4f} "
        f"acc {100 * record['test_accuracy']:6.2f}%  "
        f"lr {record['learning_rate']:.2e}  {record['epoch_seconds']:6.1f}s  "
        f"{record['train_images_per_second']:6.0f} img/s"
    )


def prepare_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CifarFlaxError(f"cannot write to --workdir={path}: {reason}") from error
    return path


def check_devices(batch_size: int) -> None:
    """Every device gets equal rows; so then does every process, each holding equally many."""
    devices = jax.device_count()
    if batch_size % devices:
        raise CifarFlaxError(
            f"batch_size {batch_size} must be a multiple of the {devices} devices it is split over"
        )


def resume_point(
    manager: Any, config: config_dict.ConfigDict, workdir: pathlib.Path
) -> tuple[int, int, EpochProgress]:
    """(checkpoint step or 0, epochs completed, progress into the next epoch) to resume from."""
    step = manager.latest_step()
    if step is None:
        return 0, 0, EpochProgress()
    meta = checkpoints.read_meta(manager, step)
    changed = changed_settings(meta, config)
    if changed:
        raise CifarFlaxError(
            f"{workdir} holds a run with other settings ({'; '.join(changed)}); pass "
            "--workdir=DIR to train this config elsewhere, or resume with the settings it has"
        )
    progress = EpochProgress(tuple(meta["epoch_losses"]), tuple(meta["epoch_corrects"]))
    return step, meta["epoch"], progress


# Keys that may change between the runs of one workdir: where the data is, how it is produced.
RESUMABLE_CHANGES = ("data_dir", "download", "augment_workers")


def changed_settings(meta: dict[str, Any], config: config_dict.ConfigDict) -> list[str]:
    """How `config` differs from the one the checkpoint's run trained with, key by key.

    More epochs continue a run only where the learning-rate schedule does not depend on them.
    """
    saved = flatten(meta["config"])
    current = flatten(json.loads(config.to_json_best_effort()))
    saved["model"], current["model"] = meta["model"], canonical(config.model)
    ignored = set(RESUMABLE_CHANGES)
    if config.lr_schedule != "onecycle":
        ignored.add("num_epochs")
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(saved.keys() & current.keys())
        if key not in ignored and saved.get(key) != current.get(key)
    ][:3]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples, so JSON and config values compare."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = tuple(value) if isinstance(value, list) else value
    return flat


def train_and_evaluate(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train `config.model`, evaluating and checkpointing after every epoch; resume if possible.

    SIGINT/SIGTERM save a checkpoint after the current step and raise RunInterruptedError; the
    same call then resumes from it and ends exactly as an uninterrupted run would. Returns the
    last epoch's record (what metrics.jsonl holds).
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
    to_global = global_batches(data_sharding(mesh))
    manager = checkpoints.open_manager(workdir)
    record: dict[str, Any] = {}
    try:
        step, epochs_done, progress = resume_point(manager, config, workdir)
        state = jax.device_put(create_train_state(model, config, steps), replicated(mesh))
        if step:
            state = checkpoints.restore_state(manager, step, state)
            where = f"epoch {epochs_done}" + (
                f" and {progress.batches}/{steps} steps of epoch {epochs_done + 1}"
                if progress.batches
                else ""
            )
            if is_chief():
                print(f"Resuming from the checkpoint after {where} in {workdir}", flush=True)
        train_step = jit_train_step(mesh, config.l1)
        eval_step = jit_eval_step(mesh, model.apply)
        log = MetricsLog(workdir, epochs_done)
        workers = (
            input_pipeline.default_workers()
            if config.augment_workers is None
            else config.augment_workers
        )
        epoch = epochs_done
        with (
            input_pipeline.Augmenter(config.augment, config.normalize.mean, workers) as augment,
            StopSignals() as stop,
        ):
            for epoch in range(epochs_done + 1, config.num_epochs + 1):
                if stop.requested():
                    break
                started = time.perf_counter()
                batches = input_pipeline.train_batches(
                    train_split, config, epoch - 1, augment, progress.batches, process_shard()
                )
                steps_before = progress.batches
                state, progress, learning_rate = train_epoch(
                    state, train_step, batches, steps, epoch, to_global, progress, stop
                )
                if progress.batches < steps:  # stopped by a signal
                    meta = progress_meta(config, epoch - 1, progress)
                    checkpoints.save(manager, state, meta)
                    break
                train_seconds = time.perf_counter() - started
                result = evaluate_split(
                    eval_step,
                    checkpoints.model_variables(state),
                    eval_split,
                    config.batch_size,
                    config.normalize,
                    to_global,
                )
                images = steps * config.batch_size
                record = {
                    "epoch": epoch,
                    "step": int(state.step),
                    "train_loss": float(np.mean(progress.losses)),
                    "train_accuracy": sum(progress.corrects) / images,
                    "learning_rate": learning_rate,
                    "train_images": images,
                    "test_loss": result.loss,
                    "test_accuracy": result.accuracy,
                    "test_correct": result.correct,
                    "test_count": result.count,
                    "epoch_seconds": time.perf_counter() - started,
                    "train_images_per_second": (steps - steps_before)
                    * config.batch_size
                    / train_seconds,
                    "device": device_description(),
                }
                log.write(record, config.num_epochs, config.eval_split)
                checkpoints.save(manager, state, epoch_meta(config, record))
                progress = EpochProgress()
    finally:
        manager.wait_until_finished()
        manager.close()
    if stop.received is not None and int(state.step) < config.num_epochs * steps:
        # (a signal during the last epoch's evaluation finds the run finished: nothing to resume)
        raise interrupted(stop.received, workdir, int(state.step), epoch, progress, steps)
    records = log.records()
    if records and is_chief():
        plots.save_training_curves(
            records,
            workdir / CURVES_FILE,
            title=config.model,
            held_out=held_out_name(config.eval_split),
        )
    if not record:
        if is_chief():
            print(f"Nothing to do: {workdir} already holds all {config.num_epochs} epochs")
        record = records[-1] if records else {}
    return record


def interrupted(
    signum: int, workdir: pathlib.Path, step: int, epoch: int, progress: EpochProgress, steps: int
) -> RunInterruptedError:
    name = signal.Signals(signum).name
    if progress.batches:
        saved = f"saved step {step} ({progress.batches}/{steps} steps of epoch {epoch})"
    elif step:
        saved = f"the checkpoint of step {step} (end of epoch {step // steps}) is the latest"
    else:
        saved = "no step had run, nothing to save"
    return RunInterruptedError(
        f"{name}: training stopped; {saved} in {workdir}; run the same command to resume", signum
    )


def progress_meta(
    config: config_dict.ConfigDict, epochs_done: int, progress: EpochProgress
) -> dict[str, Any]:
    """Meta of a checkpoint saved partway through epoch `epochs_done + 1`."""
    return {
        "model": canonical(config.model),
        "eval_split": config.eval_split,
        "normalize": {"mean": list(config.normalize.mean), "std": list(config.normalize.std)},
        "config": json.loads(config.to_json_best_effort()),
        "epoch": epochs_done,
        "epoch_losses": list(progress.losses),
        "epoch_corrects": list(progress.corrects),
    }


def epoch_meta(config: config_dict.ConfigDict, record: dict[str, Any]) -> dict[str, Any]:
    """Meta of the checkpoint at the end of epoch `record["epoch"]`."""
    return {
        **progress_meta(config, record["epoch"], EpochProgress()),
        "test_accuracy": record["test_accuracy"],
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
        global_batches(data_sharding(mesh)),
    )
    report = eval_report(result, split, meta, which, step)
    if not is_chief():
        return report
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
    split: input_pipeline.Split,
    meta: dict[str, Any],
    which: str,
    step: int,
) -> dict[str, Any]:
    class_names = split.class_names
    classes = len(class_names)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (result.labels, result.predictions), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "model": meta["model"],
        "checkpoint": which,
        "split": split.name,
        "step": step,
        "epoch": meta["epoch"],
        "steps_into_next_epoch": len(meta["epoch_losses"]),
        "accuracy": result.accuracy,
        "correct": result.correct,
        "count": result.count,
        "loss": result.loss,
        "per_class_accuracy": dict(zip(class_names, per_class.tolist(), strict=True)),
        "confusion_matrix": confusion.tolist(),
    }


def print_report(report: dict[str, Any], class_names: tuple[str, ...]) -> None:
    where = f"epoch {report['epoch']}"
    if report["steps_into_next_epoch"]:
        where += f" + {report['steps_into_next_epoch']} steps"
    print(f"Checkpoint: {report['checkpoint']} (step {report['step']}, {where}), {report['model']}")
    print(
        f"{held_out_name(report['split']).capitalize()} accuracy: "
        f"{100 * report['accuracy']:.2f}% ({report['correct']}/{report['count']})"
    )
    print("Per-class accuracy:")
    for name, accuracy in report["per_class_accuracy"].items():
        print(f"  {name:12s} {100 * accuracy:6.2f}%")
    short = [name[:5] for name in class_names]
    print("Confusion matrix (rows: true, columns: predicted):")
    print("       " + " ".join(f"{name:>5s}" for name in short))
    for name, row in zip(short, report["confusion_matrix"], strict=True):
        print(f"{name:>6s} " + " ".join(f"{count:5d}" for count in row))
