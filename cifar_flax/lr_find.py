"""Smith's learning-rate range test (`--mode=lr_find`): the config's own model, optimizer and
augmented training batches, with the LR growing exponentially from `lr_find.start` to
`lr_find.stop` over `lr_find.steps` updates; the loss, smoothed, suggests OneCycle's peak.

The suggestion is a tenth of the LR at which the smoothed loss was lowest (the rule of Smith's
and fastai's 1cycle recipe: the minimum is already at the edge of divergence, one order of
magnitude below it still learns fast). It writes lr_find.json and lr_find.png into the workdir
and nothing else: a trained run's checkpoints and config.json there are left as they are.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import optax
from ml_collections import config_dict

from cifar_flax import batch_source, input_pipeline, plots
from cifar_flax.config_lib import validate, validate_lr_find
from cifar_flax.distributed import check_devices
from cifar_flax.errors import CifarFlaxError
from cifar_flax.models import create_model
from cifar_flax.splits import Batch
from cifar_flax.steps import TrainState, create_train_state, jit_train_step, make_mesh, replicated

RESULT_FILE = "lr_find.json"
PLOT_FILE = "lr_find.png"
SUGGESTION_BELOW_MINIMUM = 10.0  # the suggested peak is the lowest loss's LR over this


@dataclasses.dataclass(frozen=True)
class RangeTest:
    """Each update's LR and loss, the smoothed loss, and where the test stopped."""

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    diverged: bool  # stopped early: the smoothed loss exceeded `diverge` times its minimum

    @property
    def lowest(self) -> int:
        """The update with the lowest smoothed loss (not a non-finite one, where it diverged)."""
        return int(np.nanargmin(np.where(np.isfinite(self.smoothed), self.smoothed, np.nan)))

    @property
    def suggestion(self) -> float:
        return float(self.learning_rates[self.lowest]) / SUGGESTION_BELOW_MINIMUM


def exponential_range(start: float, stop: float, steps: int) -> optax.Schedule:
    """`start` at update 0, `stop` at update `steps - 1`, a constant factor between updates."""
    return lambda step: start * (stop / start) ** (step / (steps - 1))


def smoothed(losses: Iterable[float], weight: float) -> np.ndarray:
    """The exponential moving average of `losses` with `weight` on the past, bias-corrected
    (divided by 1 - weight**n, as Adam's moments), so that the first values are not pulled
    towards zero."""
    average, result = 0.0, []
    for n, loss in enumerate(losses, start=1):
        average = weight * average + (1 - weight) * loss
        result.append(average / (1 - weight**n))
    return np.asarray(result)


def run_range_test(
    state: TrainState,
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Any]],
    batches: Iterable[Batch],
    test: config_dict.ConfigDict,
) -> RangeTest:
    """Update `state` on `batches` until `test.steps` updates or the loss diverges."""
    learning_rates, losses, smooth = [], [], np.zeros(0)
    for batch in itertools.islice(batches, test.steps):
        state, metrics = train_step(state, batch)
        metrics = jax.device_get(metrics)
        learning_rates.append(float(metrics["learning_rate"]))
        losses.append(float(metrics["loss"]))
        smooth = smoothed(losses, test.smoothing)
        if not np.isfinite(smooth[-1]) or smooth[-1] > test.diverge * smooth.min():
            return RangeTest(np.asarray(learning_rates), np.asarray(losses), smooth, diverged=True)
    return RangeTest(np.asarray(learning_rates), np.asarray(losses), smooth, diverged=False)


def check_suggestion(test: RangeTest, start: float) -> None:
    """A one-line error where the losses suggest no peak inside the range."""
    if test.suggestion <= start:
        where = f"at LR {test.learning_rates[-1]:.2e}, update {len(test.losses)}"
        happened = "diverged" if test.diverged else "ended"
        raise CifarFlaxError(
            f"the smoothed loss was lowest within the range's first decade and the test "
            f"{happened} {where}: no peak to suggest; lower --config.lr_find.start"
        )


def report(test: RangeTest, config: config_dict.ConfigDict) -> dict[str, Any]:
    """What lr_find.json holds."""
    return {
        "model": config.model,
        "optimizer": config.optimizer,
        "batch_size": config.batch_size,
        "range": config.lr_find.to_dict(),
        "diverged": test.diverged,
        "lowest_loss_learning_rate": float(test.learning_rates[test.lowest]),
        "suggested_learning_rate": test.suggestion,
        "learning_rates": test.learning_rates.tolist(),
        "losses": finite_or_none(test.losses),
        "smoothed_losses": finite_or_none(test.smoothed),
    }


def finite_or_none(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN or infinity: a diverged loss is null."""
    return [float(value) if np.isfinite(value) else None for value in values]


def suggestion_line(test: RangeTest) -> str:
    peak = f"{test.suggestion:.2g}"
    return (
        f"Suggested OneCycle peak LR: {peak} (a tenth of "
        f"{test.learning_rates[test.lowest]:.2g}, where the smoothed loss was lowest); "
        f"train with --config.learning_rate={peak}"
    )


def lr_find(config: config_dict.ConfigDict, workdir: str) -> dict[str, Any]:
    """Run the range test of `config` and write lr_find.json and lr_find.png into `workdir`."""
    validate(config)
    validate_lr_find(config)
    test_config = config.lr_find
    model = create_model(config.model)
    check_devices(config.batch_size)
    mesh = make_mesh()
    input_pipeline.hide_gpus_from_tensorflow()
    split = input_pipeline.load_split(config.data_dir, config.train_split, config.download)
    steps_per_epoch = input_pipeline.steps_per_epoch(split, config.batch_size)
    schedule = exponential_range(test_config.start, test_config.stop, test_config.steps)
    state = create_train_state(model, config, steps_per_epoch, learning_rate=schedule)
    state = jax.device_put(state, replicated(mesh))
    train_step = jit_train_step(mesh, config.l1, config.label_smoothing)
    with batch_source.open_batches(config, split, mesh) as batches:
        epochs = itertools.chain.from_iterable(batches(epoch, 0) for epoch in itertools.count())
        test = run_range_test(state, train_step, epochs, test_config)
    check_suggestion(test, test_config.start)
    result = report(test, config)
    path = pathlib.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    plots.save_lr_find(
        test.learning_rates,
        test.losses,
        test.smoothed,
        test.lowest,
        test.suggestion,
        path / PLOT_FILE,
        title=f"{config.model}: LR range test ({config.optimizer}, batch {config.batch_size})",
    )
    if test.diverged:
        print(f"The loss diverged at LR {test.learning_rates[-1]:.2e}: the test stopped there.")
    print(suggestion_line(test))
    return result
