"""The five seed networks: sizes, shapes, outputs, modes, registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax.errors import CifarFlaxError
from cifar_flax.models import NETWORKS, create_model, network
from cifar_flax.models.layers import Conv2d
from cifar_flax.summary import trace

# BatchNorm running statistics (mean and variance), from the seeds' summaries.
RUNNING_STATS = {
    "s7_dwsep": 896,
    "s7_dilated_stride": 1_012,
    "s9_inverted_residual": 4_432,
    "s7_lite": 724,
    "s6_grouped": 1_152,
}
# Output size (H = W) of every convolution in call order, from the seeds' layer tables.
CONV_SIZES = {
    "s7_dwsep": [32, 32, 15, 15, 15, 17, 8, 6, 6, 2, 2, 2, 4],
    "s7_dilated_stride": [32, 32, 16, 16, 16, 16, 16, 16, 8, 8, 8, 8, 8, 4, 4, 4],
    # main path and 1x1 shortcuts (after the branch they join): 32 ... 16 ... 8 ... 4
    "s9_inverted_residual": [32, 32, 32, 32, 16, 16, 16, 16, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4],
    "s7_lite": [32, 32, 16, 16, 16, 18, 9, 7, 7, 4, 4, 4, 6],
    "s6_grouped": [32, 30, 28, 24, 22, 11, 9, 9, 7, 5, 5, 3],
}
LOG_SOFTMAX = {"s7_dwsep", "s9_inverted_residual", "s7_lite", "s6_grouped"}  # 001: raw logits
WITH_DROPOUT = {"s7_dwsep", "s9_inverted_residual", "s7_lite", "s6_grouped"}


def test_registry_has_exactly_the_five_seeds():
    assert sorted(record.seed for record in NETWORKS.values()) == [
        "000",
        "001",
        "002",
        "003",
        "004",
    ]
    assert set(NETWORKS) == set(RUNNING_STATS) == set(CONV_SIZES)


@pytest.mark.parametrize("name", NETWORKS)
def test_parameter_and_running_stat_counts(name):
    variables = jax.eval_shape(
        create_model(name).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
    count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))  # noqa: E731
    expected = (network(name).params, RUNNING_STATS[name])
    assert (count(variables["params"]), count(variables["batch_stats"])) == expected


@pytest.mark.parametrize("name", NETWORKS)
def test_convolution_output_sizes_follow_the_seed(name):
    root, _ = trace(create_model(name), (1, 32, 32, 3))
    sizes = [call.out_shape[1] for call in root.walk() if isinstance(call.module, Conv2d)]
    assert sizes == CONV_SIZES[name]


def fast_compile(function, *args):
    """`function` compiled for `args` without XLA's backend optimisations: these tests check
    what the networks compute, once, and the optimisations would double the compile time."""
    return jax.jit(function).lower(*args).compile({"xla_backend_optimization_level": 0})


@functools.cache
def outputs(name):
    """A network's variables and its outputs: eval mode twice, train mode with two keys."""
    model = create_model(name)
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    variables = fast_compile(model.init, jax.random.key(0), images)(jax.random.key(0), images)

    def evaluate(variables):
        return model.apply(variables, images, train=False, mutable=["batch_stats"])

    def train(variables, key):
        return model.apply(
            variables, images, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )

    evaluate = fast_compile(evaluate, variables)
    train = fast_compile(train, variables, jax.random.key(2))
    (first, state), (second, _) = evaluate(variables), evaluate(variables)
    trained = train(variables, jax.random.key(2)), train(variables, jax.random.key(3))
    return name, variables, (first, second, state), trained


@pytest.fixture(params=list(NETWORKS))
def initialized(request):
    return outputs(request.param)


def test_eval_output_shape_and_head(initialized):
    name, _, (out, _, _), _ = initialized
    assert out.shape == (4, 10)
    assert bool(jnp.all(jnp.isfinite(out)))
    total_probability = jnp.exp(out).sum(axis=1)
    normalized = bool(jnp.allclose(total_probability, 1.0, atol=1e-5))
    assert normalized == (name in LOG_SOFTMAX)


def test_eval_mode_is_deterministic_and_leaves_stats_alone(initialized):
    _, variables, (first, second, state), _ = initialized
    np.testing.assert_array_equal(first, second)
    assert jax.tree.all(
        jax.tree.map(jnp.array_equal, state["batch_stats"], variables["batch_stats"])
    )


def test_train_mode_updates_stats_and_applies_dropout(initialized):
    name, variables, _, ((out_a, state), (out_b, _)) = initialized
    changed = jax.tree.map(
        lambda a, b: not jnp.array_equal(a, b), state["batch_stats"], variables["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))
    assert bool(jnp.all(jnp.isfinite(out_a)))
    assert (not np.array_equal(out_a, out_b)) == (name in WITH_DROPOUT)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(CifarFlaxError, match="unknown model 'resnet18'") as error:
        create_model("resnet18")
    message = str(error.value)
    assert "\n" not in message
    assert all(name in message for name in NETWORKS)
