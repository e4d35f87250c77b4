"""Checkpoints in WORKDIR/checkpoints with orbax: one per epoch (and one where an interrupted run
stopped), named by the global step; the last few and the best by test accuracy are kept.

Each checkpoint holds three items, so that evaluation needs nothing else:
  model  params and BatchNorm statistics (all `--mode=eval` restores; a few hundred KB)
  train  step, optimizer state (with the schedule's position) and dropout key, for resuming
  meta   JSON: format, model name, epochs completed, test accuracy, normalisation, the full
         training config, and for a run stopped mid-epoch how far it got and its losses so far
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save leaves the earlier checkpoints intact; the next run removes the temporary one.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from cifar_flax.errors import CifarFlaxError
from cifar_flax.steps import TrainState

CHECKPOINT_DIR = "checkpoints"
KEEP_LAST = 3
BEST_METRIC = "test_accuracy"
# Bumped whenever what a checkpoint holds changes; older ones get a clear error, not garbage.
FORMAT = 2


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir).absolute() / CHECKPOINT_DIR


def open_manager(workdir: str | pathlib.Path, create: bool = True) -> ocp.CheckpointManager:
    """The workdir's checkpoint manager: keeps the last KEEP_LAST and the best by test accuracy."""
    directory = checkpoint_dir(workdir)
    if not create and not directory.is_dir():
        raise CifarFlaxError(no_checkpoint_message(workdir))
    best = lambda metrics: metrics[BEST_METRIC]  # noqa: E731
    options = ocp.CheckpointManagerOptions(
        best_fn=best,
        best_mode="max",
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(KEEP_LAST),
                # Mid-epoch checkpoints have no test accuracy: LatestN alone decides on them.
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
    """Save `state` under its step, ranked by meta[BEST_METRIC] when it has one."""
    accuracy = meta.get(BEST_METRIC)
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
    """The step of the best or the latest checkpoint."""
    step = manager.best_step() if which == "best" else manager.latest_step()
    if step is None:
        raise CifarFlaxError(no_checkpoint_message(workdir))
    return step


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    try:
        restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as error:  # orbax raises many types for a damaged checkpoint
        raise incompatible(manager, step, error) from error
    meta = dict(restored["meta"])
    if meta.get("format") != FORMAT:
        raise CifarFlaxError(
            f"checkpoint {manager.directory / str(step)} has format {meta.get('format', 1)}, "
            f"this version of cifar-flax reads format {FORMAT}: train again in a new --workdir, "
            "or evaluate it with the version that wrote it"
        )
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
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CifarFlaxError(
        f"checkpoint {manager.directory / str(step)} cannot be restored (damaged, or written by "
        f"another version, model or optimizer): {first_line[:300]}"
    )
