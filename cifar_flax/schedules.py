"""Learning-rate (and momentum) schedules, per optimizer step, as optax schedules.

OneCycle is written out rather than taken from optax: PyTorch's `OneCycleLR`, which seed 003
ran, ends its first phase at step `pct_start * T - 1` (optax's `cosine_onecycle_schedule` at
`pct_start * T`), has a three-phase variant that optax's linear one does not match, and cycles
momentum (or Adam's beta1) inversely to the LR.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from ml_collections import config_dict

from cifar_flax.config_lib import LR_SCHEDULES
from cifar_flax.errors import CifarFlaxError


def _cosine(start: float, end: float, done: jnp.ndarray, left: jnp.ndarray) -> jnp.ndarray:
    """PyTorch's `_annealing_cos` from `start` to `end`; `done + left = 1` of the phase.

    `end + (start - end) (cos(pi done) + 1) / 2` is computed as the weighted sum
    `start sin^2(pi left / 2) + end sin^2(pi done / 2)`: both weights and terms are positive, so
    float32 keeps its relative precision where the LR rises 25-fold or falls 10,000-fold.
    """
    return start * jnp.sin(jnp.pi / 2 * left) ** 2 + end * jnp.sin(jnp.pi / 2 * done) ** 2


def _linear(start: float, end: float, done: jnp.ndarray, left: jnp.ndarray) -> jnp.ndarray:
    return start * left + end * done


def _phases(
    total_steps: int, pct_start: float, three_phase: bool, low: float, peak: float, final: float
) -> list[tuple[float, float, float]]:
    """(end step, start value, end value) of each phase, as PyTorch's `OneCycleLR` has them."""
    up = float(pct_start * total_steps) - 1
    if three_phase:
        return [(up, low, peak), (2 * up, peak, low), (total_steps - 1.0, low, final)]
    return [(up, low, peak), (total_steps - 1.0, peak, final)]


def _piecewise(phases: list[tuple[float, float, float]], anneal: str) -> optax.Schedule:
    """Interpolate within the phase that holds the step; the last phase also past its end."""
    interpolate = _cosine if anneal == "cos" else _linear
    starts = [0.0] + [end_step for end_step, _, _ in phases[:-1]]
    pieces = [
        (start_step, end_step, start, end)
        for start_step, (end_step, start, end) in zip(starts, phases, strict=True)
    ]

    def schedule(step: jnp.ndarray) -> jnp.ndarray:
        step = jnp.asarray(step, jnp.float32)

        def value(start_step: float, end_step: float, start: float, end: float) -> jnp.ndarray:
            length = end_step - start_step
            return interpolate(start, end, (step - start_step) / length, (end_step - step) / length)

        result = value(*pieces[-1])
        for piece in reversed(pieces[:-1]):  # the first phase that holds the step wins
            result = jnp.where(step <= piece[1], value(*piece), result)
        return result

    return schedule


def onecycle(
    total_steps: int,
    max_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    anneal: str = "cos",
) -> optax.Schedule:
    """PyTorch's `OneCycleLR` learning rate at each step (step 0 = the first update)."""
    initial = max_value / div_factor
    phases = _phases(
        total_steps, pct_start, three_phase, initial, max_value, initial / final_div_factor
    )
    return _piecewise(phases, anneal)


def onecycle_momentum(
    total_steps: int,
    base: float = 0.85,
    maximum: float = 0.95,
    pct_start: float = 0.3,
    three_phase: bool = False,
    anneal: str = "cos",
) -> optax.Schedule:
    """PyTorch's `OneCycleLR(cycle_momentum=True)`: momentum falls while the LR rises."""
    return _piecewise(_phases(total_steps, pct_start, three_phase, maximum, base, maximum), anneal)


def learning_rate_schedule(config: config_dict.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The config's LR schedule, per optimizer step."""
    total_steps = config.num_epochs * steps_per_epoch
    if config.lr_schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.lr_schedule == "step":  # PyTorch StepLR, stepped once per epoch
        return optax.exponential_decay(
            config.learning_rate,
            transition_steps=config.step_schedule.step_size * steps_per_epoch,
            decay_rate=config.step_schedule.gamma,
            staircase=True,
        )
    if config.lr_schedule == "onecycle":
        cycle = config.onecycle
        return onecycle(
            total_steps,
            config.learning_rate,
            cycle.pct_start,
            cycle.div_factor,
            cycle.final_div_factor,
            cycle.three_phase,
            cycle.anneal,
        )
    raise CifarFlaxError(
        f"unknown lr_schedule {config.lr_schedule!r}; use one of: {', '.join(LR_SCHEDULES)}"
    )


def momentum_schedule(
    config: config_dict.ConfigDict, steps_per_epoch: int
) -> optax.Schedule | float:
    """SGD momentum or Adam beta1: cycled by OneCycle when asked, else `config.momentum`."""
    cycle = config.onecycle
    if config.lr_schedule == "onecycle" and cycle.cycle_momentum:
        return onecycle_momentum(
            config.num_epochs * steps_per_epoch,
            cycle.base_momentum,
            cycle.max_momentum,
            cycle.pct_start,
            cycle.three_phase,
            cycle.anneal,
        )
    return config.momentum
