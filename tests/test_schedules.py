"""Schedules: OneCycle equals PyTorch's OneCycleLR formula; StepLR; constant."""

import math

import numpy as np
import pytest

from cifar_flax.config_lib import base_config
from cifar_flax.errors import CifarFlaxError
from cifar_flax.schedules import (
    learning_rate_schedule,
    momentum_schedule,
    onecycle,
    onecycle_momentum,
)


def torch_onecycle(
    step, total, max_lr, pct=0.3, div=25.0, final_div=1e4, three=False, anneal="cos", value="lr"
):
    """torch.optim.lr_scheduler.OneCycleLR.get_lr, transcribed (float64) from its source."""
    initial, minimum = max_lr / div, max_lr / div / final_div
    if value == "momentum":
        initial, max_lr, minimum = 0.95, 0.85, 0.95
    if three:
        phases = [
            (pct * total - 1, initial, max_lr),
            (2 * pct * total - 2, max_lr, initial),
            (total - 1, initial, minimum),
        ]
    else:
        phases = [(pct * total - 1, initial, max_lr), (total - 1, max_lr, minimum)]

    def interpolate(start, end, fraction):
        if anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    start_step = 0.0
    for index, (end_step, start, end) in enumerate(phases):
        if step <= end_step or index == len(phases) - 1:
            return interpolate(start, end, (step - start_step) / (end_step - start_step))
        start_step = end_step
    raise AssertionError


CASES = [
    dict(total=90 * 196, max_lr=0.01),  # seed 003: 90 epochs x 196 steps
    dict(total=97, max_lr=0.1, pct=0.25),
    dict(total=1000, max_lr=0.05, three=True),
    dict(total=500, max_lr=0.2, anneal="linear"),
    dict(total=400, max_lr=0.2, three=True, anneal="linear", final_div=100.0),
]


@pytest.mark.parametrize("case", CASES)
def test_onecycle_equals_pytorch(case):
    total = case["total"]
    kwargs = dict(
        pct_start=case.get("pct", 0.3),
        div_factor=25.0,
        final_div_factor=case.get("final_div", 1e4),
        three_phase=case.get("three", False),
        anneal=case.get("anneal", "cos"),
    )
    schedule = onecycle(total, case["max_lr"], **kwargs)
    momentum = onecycle_momentum(
        total, 0.85, 0.95, kwargs["pct_start"], kwargs["three_phase"], kwargs["anneal"]
    )
    steps = sorted(
        {
            0,
            1,
            2,
            total // 7,
            int(0.3 * total) - 1,
            int(0.3 * total),
            total // 2,
            total - 2,
            total - 1,
        }
    )
    for step in steps:
        expected = torch_onecycle(
            step,
            total,
            case["max_lr"],
            case.get("pct", 0.3),
            25.0,
            kwargs["final_div_factor"],
            kwargs["three_phase"],
            kwargs["anneal"],
        )
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step
        expected_momentum = torch_onecycle(
            step,
            total,
            0,
            case.get("pct", 0.3),
            three=kwargs["three_phase"],
            anneal=kwargs["anneal"],
            value="momentum",
        )
        assert float(momentum(step)) == pytest.approx(expected_momentum, rel=1e-6), step


def test_onecycle_start_peak_and_end():
    schedule = onecycle(1000, 0.1)
    assert float(schedule(0)) == pytest.approx(0.004, rel=1e-6)
    assert float(schedule(299)) == pytest.approx(0.1, rel=1e-6)  # peak at pct_start * T - 1
    assert float(schedule(999)) == pytest.approx(0.004 / 1e4, rel=1e-6)


def test_config_schedules():
    config = base_config()
    config.num_epochs, config.learning_rate = 10, 0.1
    config.lr_schedule = "step"
    config.step_schedule.step_size, config.step_schedule.gamma = 2, 0.5
    step_lr = learning_rate_schedule(config, steps_per_epoch=5)
    values = [float(step_lr(step)) for step in (0, 9, 10, 19, 20, 49)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.05, 0.05, 0.025, 0.1 * 0.5**4], rtol=1e-6)
    config.lr_schedule = "constant"
    assert float(learning_rate_schedule(config, 5)(37)) == pytest.approx(0.1)
    assert momentum_schedule(config, 5) == config.momentum
    config.lr_schedule = "onecycle"
    assert float(momentum_schedule(config, 5)(0)) == pytest.approx(0.95)
    config.onecycle.cycle_momentum = False
    assert momentum_schedule(config, 5) == config.momentum
    config.lr_schedule = "cosine"
    with pytest.raises(CifarFlaxError, match="unknown lr_schedule 'cosine'"):
        learning_rate_schedule(config, 5)
