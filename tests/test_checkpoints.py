"""Checkpoints: which one is "best" (only on a validation split), and reading older formats."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_flax import checkpoints
from cifar_flax.errors import CifarFlaxError
from cifar_flax.steps import TrainState


def tiny_state(step):
    state = TrainState.create(
        apply_fn=None,
        params={"w": jnp.zeros(2)},
        tx=optax.sgd(0.1),
        batch_stats={},
        dropout_key=jax.random.PRNGKey(0),
    )
    return state.replace(step=step)


def save_epochs(workdir, eval_split, accuracies):
    config = {"model": "s7_lite", "eval_split": eval_split, "normalize": {}}
    manager = checkpoints.open_manager(workdir)
    for epoch, accuracy in enumerate(accuracies, start=1):
        meta = checkpoints.meta(config, epoch, checkpoints.Progress(), accuracy)
        checkpoints.save(manager, tiny_state(10 * epoch), meta)
    manager.wait_until_finished()
    return manager


def test_a_validation_run_keeps_and_finds_its_best_checkpoint(tmp_path):
    manager = save_epochs(tmp_path, "train[45000:]", [0.5, 0.8, 0.6, 0.7, 0.65])
    assert manager.all_steps() == [20, 30, 40, 50]  # the last three and the best
    assert checkpoints.choose_step(manager, "best", tmp_path) == 20
    assert checkpoints.choose_step(manager, "latest", tmp_path) == 50
    manager.close()


def test_a_run_on_the_test_set_keeps_no_best(tmp_path):
    manager = save_epochs(tmp_path, "test", [0.5, 0.8, 0.6, 0.7, 0.65])
    assert manager.all_steps() == [30, 40, 50]
    with pytest.raises(
        CifarFlaxError, match="keeps no best checkpoint: its run evaluates on 'test'"
    ):
        checkpoints.choose_step(manager, "best", tmp_path)
    manager.close()


CONFIG = {"eval_split": "test", "num_epochs": 3}


def test_format_1_meta_reads_as_the_current_format():
    old = {"model": "s7_lite", "epoch": 2, "test_accuracy": 0.75, "config": CONFIG}
    assert checkpoints.upgrade_meta(old) == {
        "format": checkpoints.FORMAT,
        "model": "s7_lite",
        "epoch": 2,
        "eval_accuracy": 0.75,
        "eval_split": "test",
        "config": CONFIG,
        "epoch_steps": 0,
        "epoch_loss_sum": 0.0,
        "epoch_correct": 0,
    }


def test_format_2_mid_epoch_meta_keeps_the_sums_of_its_steps():
    old = {
        "format": 2,
        "model": "s7_lite",
        "eval_split": "test",
        "config": CONFIG,
        "epoch": 1,
        "epoch_losses": [2.0, 1.5, 1.25],
        "epoch_corrects": [10, 20, 30],
    }
    meta = checkpoints.upgrade_meta(old)
    assert checkpoints.progress_of(meta) == checkpoints.Progress(3, 4.75, 60)
    assert "epoch_losses" not in meta and meta["format"] == checkpoints.FORMAT


def test_progress_adds_in_one_order_however_the_epoch_was_split():
    losses = np.random.default_rng(0).uniform(0, 3, 50)
    whole = checkpoints.Progress().plus(losses, [1] * 50)
    split = checkpoints.Progress().plus(losses[:17], [1] * 17).plus(losses[17:], [1] * 33)
    assert whole == split  # exactly: a resumed epoch ends with the same train loss
