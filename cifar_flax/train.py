"""The training loop: config -> data -> model -> steps -> metrics and checkpoints; run again on
the same workdir, it resumes (from mid-epoch too) and ends exactly as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from ml_collections import config_dict
from tqdm import tqdm

from cifar_flax import batch_source, checkpoints, device_augment, input_pipeline, metrics
from cifar_flax import workdir as workdirs
from cifar_flax.config_lib import describe, validate
from cifar_flax.distributed import check_devices, global_batches
from cifar_flax.errors import NonFiniteLossError
from cifar_flax.evaluation import EvalResult, evaluate_split
from cifar_flax.models import create_model
from cifar_flax.preemption import StopSignals, interrupted, resuming
from cifar_flax.splits import Batch, Split
from cifar_flax.steps import (
    TrainState,
    create_train_state,
    data_sharding,
    jit_config_eval_step,
    jit_train_step,
    make_mesh,
    replicated,
)

LOSS_CHECK_EVERY = 20  # steps between reading the losses back (progress bar, NaN check)


@dataclasses.dataclass(frozen=True)
class Run:
    """What every epoch of one run uses."""

    config: config_dict.ConfigDict
    config_values: dict[str, Any]  # as JSON, as the workdir and its checkpoints record it
    model: nn.Module
    train_split: Split
    eval_split: Split
    steps: int
    train_step: Callable[..., Any]
    eval_step: Callable[..., Any]
    to_global: Callable[[Batch], Any]

    def evaluate(self, state: TrainState) -> EvalResult:
        data = (self.eval_split, self.config.batch_size, self.config.normalize, self.to_global)
        return evaluate_split(self.eval_step, checkpoints.model_variables(state), *data)


@dataclasses.dataclass(frozen=True)
class Loop:
    """What the epochs of one call draw on and report to: stop requests, batches, checkpoints,
    log."""

    stop: StopSignals
    batches: batch_source.Batches
    manager: Any
    log: metrics.MetricsLog


def check_finite(losses: list[jax.Array], first_step: int, epoch: int) -> np.ndarray:
    """Read the losses back; stop at the first non-finite one."""
    values = np.asarray(jax.device_get(losses), np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise NonFiniteLossError(
            f"the loss became {values[bad[0]]} at step {first_step + int(bad[0])} (epoch {epoch}); "
            "training stopped and the checkpoints of earlier epochs are kept. Lower the learning "
            "rate or clip the gradients (--config.grad_clip_value)"
        )
    return values


def train_epoch(
    state: TrainState, run: Run, epoch: int, done: checkpoints.Progress, loop: Loop
) -> tuple[TrainState, checkpoints.Progress, float | None]:
    """Train the rest of epoch `epoch` after `done`, until it ends or a stop is asked for;
    return the new state, the epoch's progress and the last step's learning rate."""
    batches = loop.batches(epoch - 1, done.steps)
    losses, corrects, learning_rate = [], [], None
    first_step = int(state.step)
    show_bar = sys.stderr.isatty() and metrics.is_chief()
    with tqdm(
        total=run.steps,
        initial=done.steps,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not show_bar,
    ) as bar:
        for index, batch in enumerate(batches):
            state, step_metrics = run.train_step(state, batch)
            losses.append(step_metrics["loss"])
            corrects.append(step_metrics["correct"])
            learning_rate = step_metrics["learning_rate"]
            bar.update()
            if (index + 1) % LOSS_CHECK_EVERY == 0:
                first_recent = first_step + index + 1 - LOSS_CHECK_EVERY
                recent = check_finite(losses[-LOSS_CHECK_EVERY:], first_recent, epoch)
                bar.set_postfix(loss=f"{recent.mean():.4f}")
            if loop.stop.requested(index):
                break
    progress = done.plus(
        check_finite(losses, first_step, epoch), (int(c) for c in jax.device_get(corrects))
    )
    return state, progress, None if learning_rate is None else float(learning_rate)


def epoch_record(
    run: Run,
    state: TrainState,
    epoch: int,
    progress: checkpoints.Progress,
    learning_rate: float,
    result: EvalResult,
    timing: dict[str, float],
) -> dict[str, Any]:
    """One line of metrics.jsonl: the epoch's training and held-out figures and its speed."""
    images = run.steps * run.config.batch_size
    return {
        "epoch": epoch,
        "step": int(state.step),
        "train_loss": progress.loss_sum / progress.steps,
        "train_accuracy": progress.correct / images,
        "learning_rate": learning_rate,
        "train_images": images,
        "eval_split": run.config.eval_split,
        "eval_loss": result.loss,
        "eval_accuracy": result.accuracy,
        "eval_correct": result.correct,
        "eval_count": result.count,
        **timing,
        "device": metrics.device_description(),
    }


def prepare_run(config: config_dict.ConfigDict, model: nn.Module, mesh: jax.sharding.Mesh) -> Run:
    """Data, steps per epoch and the compiled steps of `config`, or a one-line error."""
    input_pipeline.hide_gpus_from_tensorflow()
    train_split = input_pipeline.load_split(config.data_dir, config.train_split, config.download)
    eval_split = input_pipeline.load_split(config.data_dir, config.eval_split, config.download)
    steps = input_pipeline.steps_per_epoch(train_split, config.batch_size)
    return Run(
        config,
        workdirs.config_json(config),
        model,
        train_split,
        eval_split,
        steps,
        jit_train_step(mesh, config.l1, config.label_smoothing),
        jit_config_eval_step(mesh, model, config),
        global_batches(data_sharding(mesh)),
    )


def initial_state(
    run: Run, manager: Any, workdir: pathlib.Path, mesh: jax.sharding.Mesh
) -> tuple[TrainState, int, checkpoints.Progress]:
    """The latest checkpoint's state, epochs completed and progress into the next; or new ones."""
    step = manager.latest_step()
    meta = None if step is None else checkpoints.read_meta(manager, step)
    if meta is not None:  # before any state is built: a refused resume leaves no trace
        workdirs.check_resumable(meta, run.config, workdir)
    state = create_train_state(run.model, run.config, run.steps)
    state = jax.device_put(state, replicated(mesh))
    if meta is None:
        return state, 0, checkpoints.Progress()
    progress = checkpoints.progress_of(meta)
    if metrics.is_chief():
        print(resuming(workdir, meta["epoch"], progress.steps, run.steps), flush=True)
    return checkpoints.restore_state(manager, step, state), meta["epoch"], progress


def train_and_evaluate(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train `config.model`, evaluating and checkpointing after every epoch; resume if possible.

    SIGINT/SIGTERM save a checkpoint after the current step and raise RunInterruptedError.
    Returns the last epoch's record (what metrics.jsonl holds).
    """
    validate(config)
    model = create_model(config.model)
    check_devices(config.batch_size)
    path = workdirs.prepare(workdir)
    mesh = make_mesh()
    run = prepare_run(config, model, mesh)
    manager = checkpoints.open_manager(path)
    try:
        state, epochs_done, progress = initial_state(run, manager, path, mesh)
        if metrics.is_chief():
            place = device_augment.place(config.augment_on)
            print(describe(config), f"Augmentation on the {place}.", sep="\n", flush=True)
            workdirs.write_config(path, config)
        log = metrics.MetricsLog(path, epochs_done, config.eval_split)
        with (
            batch_source.open_batches(config, run.train_split, mesh) as batches,
            StopSignals() as stop,
        ):
            loop = Loop(stop, batches, manager, log)
            epoch, record = epochs_done, {}
            while epoch < config.num_epochs and not stop.requested():
                epoch += 1
                state, progress, record = train_and_log_epoch(state, run, epoch, progress, loop)
                if progress.steps:  # stopped by a signal mid-epoch, its checkpoint saved
                    break
    finally:
        manager.wait_until_finished()
        manager.close()
    if stop.received is not None and int(state.step) < config.num_epochs * run.steps:
        # (a signal during the last epoch's evaluation finds the run finished: nothing to resume)
        raise interrupted(stop.received, path, int(state.step), epoch, progress.steps, run.steps)
    records = log.save_curves(title=config.model)
    if not record and metrics.is_chief():
        print(f"Nothing to do: {path} already holds all {config.num_epochs} epochs")
    return record or (records[-1] if records else {})


def train_and_log_epoch(
    state: TrainState, run: Run, epoch: int, progress: checkpoints.Progress, loop: Loop
) -> tuple[TrainState, checkpoints.Progress, dict[str, Any]]:
    """Train epoch `epoch` (its rest after `progress`), evaluate, log and checkpoint it; stopped
    mid-epoch, save a checkpoint there and return the epoch's progress and no record."""
    started = time.perf_counter()
    steps_before = progress.steps
    state, progress, learning_rate = train_epoch(state, run, epoch, progress, loop)
    if progress.steps < run.steps:
        meta = checkpoints.meta(run.config_values, epoch - 1, progress)
        checkpoints.save(loop.manager, state, meta)
        return state, progress, {}
    train_seconds = time.perf_counter() - started
    result = run.evaluate(state)
    images_timed = (run.steps - steps_before) * run.config.batch_size
    timing = {
        "epoch_seconds": time.perf_counter() - started,
        "train_images_per_second": images_timed / train_seconds,
    }
    record = epoch_record(run, state, epoch, progress, learning_rate, result, timing)
    loop.log.write(record, run.config.num_epochs)
    meta = checkpoints.meta(run.config_values, epoch, checkpoints.Progress(), result.accuracy)
    checkpoints.save(loop.manager, state, meta)
    return state, checkpoints.Progress(), record
