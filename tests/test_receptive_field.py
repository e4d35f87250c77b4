"""The effective receptive field: inside the theoretical one for every network, exact for a
linear stack, and drawn by --mode=summary."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax import main, receptive_field
from cifar_flax.config_lib import load_config
from cifar_flax.models import NETWORKS, create_model
from cifar_flax.summary import summarize
from tests.conftest import REPO_ROOT

USERS_NET = "examples/my_net.py:MyNet"


class LinearStack(nn.Module):
    """n 3x3 stride-1 convs, no activations: a unit sees exactly 2n + 1 pixels a side."""

    depth: int

    @nn.compact
    def __call__(self, x, train=False):
        for _ in range(self.depth):
            x = nn.Conv(4, (3, 3), padding=1, use_bias=False)(x)
        return x.mean(axis=(1, 2))


def field_of(model, name):
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return receptive_field.effective_field(model, variables, summarize(model, name))


@pytest.mark.parametrize("name", [*NETWORKS, USERS_NET])
def test_the_effective_field_never_leaves_the_theoretical_one(name):
    field = field_of(create_model(name), name)
    height, width = field.support
    assert max(height, width) <= field.theoretical
    assert 1 <= field.side <= min(field.theoretical, 32)


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_a_linear_stack_of_3x3_convs_sees_exactly_2n_plus_1_pixels(depth):
    field = field_of(LinearStack(depth), "stack")
    assert field.theoretical == 2 * depth + 1
    assert field.support == (2 * depth + 1, 2 * depth + 1)
    assert field.centre == (16, 16)


def test_the_square_holds_the_share_of_the_mass():
    gradient = np.zeros((9, 9))
    gradient[3:6, 3:6] = 1.0
    gradient[4, 4] = 100.0  # 100 of 108 at the centre, 8 around it
    assert receptive_field.square_side(gradient, 0.9) == ((4, 4), 1)
    assert receptive_field.square_side(gradient, 0.95) == ((4, 4), 3)


def test_summary_with_a_workdir_draws_rf_png(tmp_path, capsys):
    config = load_config(REPO_ROOT / "configs" / "s7.py")
    main.run("summary", config, str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("Effective receptive field: 95% of the gradient of ")
    assert lines[-2].endswith("; initialised from seed 1)")
    assert lines[-1] == f"Receptive field drawn: {tmp_path / 'rf.png'}"
    assert (tmp_path / "rf.png").read_bytes().startswith(b"\x89PNG")
    assert [path.name for path in tmp_path.iterdir()] == ["rf.png"]


def test_summary_of_a_trained_run_reads_its_latest_checkpoint(two_epochs, capsys):
    workdir, record = two_epochs
    config = load_config(REPO_ROOT / "configs" / "s9.py")  # the checkpoint's model counts
    name, model, _, source = receptive_field.model_and_variables(config, str(workdir))
    assert (name, source) == ("s7_lite", f"trained: step {record['step']} of {workdir}")
    assert type(model).__name__ == type(create_model("s7_lite")).__name__
