"""Checkpoints in WORKDIR/checkpoints with orbax: saving, choosing, restoring, and reading
those of every earlier format.

One checkpoint per epoch (and one where an interrupted run stopped), named by the global step;
the last KEEP_LAST are kept, and on a run that evaluates on a validation split also the best by
validation accuracy (a run that reports the test set keeps no "best": choosing on the test set
would make its figure a selected one). Each checkpoint holds three items, so that evaluation
needs nothing else:
  model  params and BatchNorm statistics (all `--mode=eval` restores)
  train  step, optimizer state (with the schedule's position) and dropout key, for resuming
  meta   JSON: format, model, eval split, epochs completed, its eval accuracy, normalisation,
         the full training config, and the running sums of the epoch in progress
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the earlier checkpoints intact; the next run removes the temporary one.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from cifar_flax.config_lib import is_validation
from cifar_flax.errors import CifarFlaxError, first_line
from cifar_flax.steps import TrainState

CHECKPOINT_DIR = "checkpoints"
KEEP_LAST = 3
BEST_METRIC = "eval_accuracy"
# Bumped whenever what a checkpoint holds changes; upgrade_meta reads every earlier one.
FORMAT = 3


@dataclasses.dataclass(frozen=True)
class Progress:
    """Running sums over the steps of one epoch so far: all a mid-epoch checkpoint needs."""

    steps: int = 0
    loss_sum: float = 0.0
    correct: int = 0

    def plus(self, losses: np.ndarray, corrects: Iterable[int]) -> Progress:
        loss_sum = self.loss_sum
        for loss in losses.tolist():  # one order of additions, however the epoch was split
            loss_sum += loss
        return Progress(self.steps + len(losses), loss_sum, self.correct + sum(corrects))


def progress_of(meta: dict[str, Any]) -> Progress:
    return Progress(meta["epoch_steps"], meta["epoch_loss_sum"], meta["epoch_correct"])


def meta(
    config_values: dict[str, Any],
    epochs_done: int,
    progress: Progress,
    eval_accuracy: float | None = None,
) -> dict[str, Any]:
    """A checkpoint's meta: after `epochs_done` epochs and `progress` into the next one."""
    values = {
        "model": config_values["model"],
        "eval_split": config_values["eval_split"],
        "normalize": config_values["normalize"],
        "config": config_values,
        "epoch": epochs_done,
        "epoch_steps": progress.steps,
        "epoch_loss_sum": progress.loss_sum,
        "epoch_correct": progress.correct,
    }
    return values if eval_accuracy is None else {**values, BEST_METRIC: eval_accuracy}


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir).absolute() / CHECKPOINT_DIR


def open_manager(workdir: str | pathlib.Path, create: bool = True) -> ocp.CheckpointManager:
    """The workdir's checkpoint manager: the last KEEP_LAST, and the best of those saved with
    a validation accuracy."""
    directory = checkpoint_dir(workdir)
    if not create and not directory.is_dir():
        raise CifarFlaxError(no_checkpoint_message(workdir))
    # Format 2 named the metric after the test set; keeping its best keeps the user's checkpoint.
    best = lambda metrics: metrics.get(BEST_METRIC, metrics.get("test_accuracy"))  # noqa: E731
    options = ocp.CheckpointManagerOptions(
        best_fn=best,
        best_mode="max",
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(KEEP_LAST),
                # Checkpoints without metrics (mid-epoch, or of a run on the test set) are kept
                # by LatestN alone.
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best, n=1, keep_checkpoints_without_metrics=False
                ),
            ]
        ),
        create=create,
        cleanup_tmp_directories=create,
    )
    try:
        return ocp.CheckpointManager(directory, options=options)
    except OSError as error:
        raise CifarFlaxError(f"cannot write checkpoints to {directory}: {error}") from error


def no_checkpoint_message(workdir: str | pathlib.Path) -> str:
    return (
        f"no checkpoint in {checkpoint_dir(workdir)}; train first with the same --workdir "
        "(python -m cifar_flax.main --config=... --workdir=DIR)"
    )


def save(manager: ocp.CheckpointManager, state: TrainState, meta: dict[str, Any]) -> None:
    """Save `state` under its step; ranked by its accuracy when that is a validation one."""
    accuracy = meta.get(BEST_METRIC) if is_validation(meta["eval_split"]) else None
    manager.save(
        int(state.step),
        args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_variables(state)),
            train=ocp.args.StandardSave(training_variables(state)),
            meta=ocp.args.JsonSave({"format": FORMAT, **meta}),
        ),
        metrics=None if accuracy is None else {BEST_METRIC: accuracy},
    )


def model_variables(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


def training_variables(state: TrainState) -> dict[str, Any]:
    return {"step": state.step, "opt_state": state.opt_state, "dropout_key": state.dropout_key}


def choose_step(manager: ocp.CheckpointManager, which: str, workdir: str | pathlib.Path) -> int:
    """The step of the latest checkpoint, or of the best by validation accuracy."""
    latest = manager.latest_step()
    if latest is None:
        raise CifarFlaxError(no_checkpoint_message(workdir))
    if which == "latest":
        return latest
    split = read_meta(manager, latest)["eval_split"]
    best = manager.best_step() if is_validation(split) else None
    if best is None:
        raise CifarFlaxError(
            f"{workdir} keeps no best checkpoint: its run evaluates on {split!r}, and only a "
            "run evaluated on a validation split (configs/...:val) chooses one; evaluate the "
            "latest (--checkpoint=latest, the default)"
        )
    return best


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    try:
        restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as error:  # orbax raises many types for a damaged checkpoint
        raise incompatible(manager, step, error) from error
    meta = dict(restored["meta"])
    if meta.get("format", 1) > FORMAT:
        raise CifarFlaxError(
            f"checkpoint {manager.directory / str(step)} has format {meta['format']}, written "
            f"by a newer cifar-flax; this version reads formats 1 to {FORMAT}: upgrade cifar-flax"
        )
    return upgrade_meta(meta)


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The meta of a checkpoint of any earlier format, as the current format has it.

    Format 1 (no "format" key) and 2 called the eval accuracy `test_accuracy`; format 1 saved
    only at epoch ends; format 2 kept the epoch in progress as per-step lists, not sums.
    """
    meta = dict(meta)
    if meta.get("format", 1) < 3:
        if "test_accuracy" in meta:
            meta[BEST_METRIC] = meta.pop("test_accuracy")
        meta.setdefault("eval_split", meta["config"]["eval_split"])
        losses, corrects = meta.pop("epoch_losses", []), meta.pop("epoch_corrects", [])
        meta["epoch_steps"] = len(losses)
        meta["epoch_loss_sum"] = float(math.fsum(losses))
        meta["epoch_correct"] = int(sum(corrects))
    meta["format"] = FORMAT
    return meta


def restore_model(
    manager: ocp.CheckpointManager, step: int, template: dict[str, Any]
) -> dict[str, Any]:
    """Params and batch_stats of checkpoint `step`, shaped and placed like `template`."""
    return _restore(manager, step, "model", template)


def restore_state(manager: ocp.CheckpointManager, step: int, state: TrainState) -> TrainState:
    """`state` with everything a resumed run needs replaced by checkpoint `step`'s."""
    model = _restore(manager, step, "model", model_variables(state))
    train = _restore(manager, step, "train", training_variables(state))
    return state.replace(**model, **train)


def _restore(manager: ocp.CheckpointManager, step: int, item: str, template: Any) -> Any:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
        )
    except Exception as error:  # a different model's tree, or a damaged file
        raise incompatible(manager, step, error) from error
    return restored[item]


def incompatible(manager: ocp.CheckpointManager, step: int, error: Exception) -> CifarFlaxError:
    return CifarFlaxError(
        f"checkpoint {manager.directory / str(step)} cannot be restored (damaged, or written by "
        f"another version, model or optimizer): {first_line(error)}"
    )
