"""The building blocks: PyTorch conventions, orders, dropout kinds, residual, pooling."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax.models.layers import (
    BN_RELU,
    RELU_BN,
    Conv2d,
    ConvBlock,
    DepthwiseSeparable,
    GlobalAvgPool,
    InvertedBottleneck,
    Residual,
    Transition,
    channel_dropout,
    log_probabilities,
)

KEY = jax.random.key(0)


def images(shape=(4, 8, 8, 16), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_conv2d_matches_flax_conv_layout_and_output(groups):
    x = images()
    ours = Conv2d(32, 3, stride=2, padding=1, dilation=1, groups=groups, use_bias=True)
    theirs = nn.Conv(32, (3, 3), strides=2, padding=((1, 1), (1, 1)), feature_group_count=groups)
    variables = ours.init(KEY, x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, theirs.init(KEY, x))
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "size_out"),
    [(1, 1, 1, 1, 10), (3, 1, 0, 1, 6), (3, 2, 0, 1, 3), (3, 2, 2, 2, 4), (3, 1, 1, 2, 6)],
)
def test_conv2d_pytorch_output_size(kernel, stride, padding, dilation, size_out):
    y, _ = Conv2d(5, kernel, stride, padding, dilation).init_with_output(KEY, images())
    assert y.shape == (4, size_out, size_out, 5)


def test_conv2d_pytorch_default_init_bounds():
    variables = Conv2d(64, 3, groups=4, use_bias=True).init(KEY, images((1, 8, 8, 32)))
    bound = 1 / math.sqrt(32 // 4 * 9)  # fan_in counts one group's inputs
    for leaf in (variables["params"]["kernel"], variables["params"]["bias"]):
        assert float(jnp.max(jnp.abs(leaf))) <= bound
        assert float(jnp.max(jnp.abs(leaf))) > 0.9 * bound  # uniform over the whole range


def test_conv2d_rejects_groups_that_do_not_divide():
    with pytest.raises(ValueError, match="groups=3"):
        Conv2d(8, groups=3).init(KEY, images())


def test_conv_block_orders():
    x = images()
    bn_relu = ConvBlock(8, post=BN_RELU)
    y, _ = bn_relu.init_with_output(KEY, x, train=True, mutable=["params", "batch_stats"])
    assert float(jnp.min(y)) >= 0.0  # ReLU last
    relu_bn = ConvBlock(8, post=RELU_BN)
    y, _ = relu_bn.init_with_output(KEY, x, train=True, mutable=["params", "batch_stats"])
    assert float(jnp.min(y)) < 0.0  # BN last re-centres the rectified maps
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_conv_block_rejects_unknown_op():
    with pytest.raises(ValueError, match="unknown post-conv op"):
        ConvBlock(8, post=("gelu",)).init(KEY, images())


def test_batch_norm_uses_pytorch_momentum_and_eps():
    x = images() * 3 + 2
    block = ConvBlock(8, post=("bn",))
    variables = block.init(KEY, x)
    conv_out = Conv2d(8, padding=1).apply({"params": variables["params"]["conv"]}, x)
    _, updates = block.apply(variables, x, train=True, mutable=["batch_stats"])
    stats = updates["batch_stats"]["bn"]
    # running = 0.9 * running + 0.1 * batch statistic, from running mean 0 and var 1.
    np.testing.assert_allclose(stats["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv_out.var(axis=(0, 1, 2)), rtol=1e-4)
    # Eval mode normalises with the running statistics and eps = 1e-5.
    variables = {**variables, "batch_stats": {"bn": {"mean": stats["mean"], "var": stats["var"]}}}
    expected = (conv_out - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(block.apply(variables, x), expected, rtol=1e-4, atol=1e-5)


def test_channel_dropout_drops_whole_feature_maps():
    x = jnp.ones((8, 6, 6, 32))
    y = channel_dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": KEY})
    per_map = y.reshape(8, 36, 32)
    assert bool(jnp.all(per_map.min(axis=1) == per_map.max(axis=1)))  # constant over H, W
    assert 0 < float(jnp.mean(per_map[:, 0] == 0)) < 1  # some maps dropped, not all


def test_inverted_bottleneck_dropout_is_elementwise():
    block = InvertedBottleneck(16, 8, dropout=0.5)
    x = images((2, 6, 6, 8))
    variables = jax.jit(block.init)(KEY, x)
    train = jax.jit(lambda v, x: block.apply(v, x, True, rngs={"dropout": KEY}, mutable=True))
    y, _ = train(variables, x)
    per_map_zeros = jnp.mean(y == 0, axis=(1, 2))
    assert bool(jnp.any((per_map_zeros > 0) & (per_map_zeros < 1)))  # zeros inside a map


def test_depthwise_separable_pads_pointwise_as_asked():
    x = images((2, 6, 6, 8))
    block = DepthwiseSeparable(12, pointwise_padding=1)
    y, variables = block.init_with_output(KEY, x)
    assert y.shape == (2, 8, 8, 12)
    assert variables["params"]["depthwise"]["kernel"].shape == (3, 3, 1, 8)


def test_transition_is_1x1_stride_2_with_bias_then_relu():
    y, variables = Transition(4).init_with_output(KEY, images((2, 9, 9, 8)))
    assert y.shape == (2, 5, 5, 4)
    assert variables["params"]["conv"]["kernel"].shape == (1, 1, 8, 4)
    assert "bias" in variables["params"]["conv"]
    assert float(jnp.min(y)) >= 0.0


class _Scale(nn.Module):
    factor: float

    def __call__(self, x, train=False):
        return self.factor * x


def test_residual_adds_identity_or_shortcut():
    x = images()
    assert jnp.allclose(Residual(_Scale(2.0)).apply({}, x), 3 * x)
    assert jnp.allclose(Residual(_Scale(2.0), _Scale(-1.0)).apply({}, x), x)


def test_global_avg_pool_is_spatial_mean():
    x = images()
    np.testing.assert_allclose(GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2)), rtol=1e-6)


def test_log_probabilities_are_float32_from_bfloat16_logits():
    logits = (5 + jax.random.normal(KEY, (4, 10))).astype(jnp.bfloat16)
    got = log_probabilities(logits)
    assert got.dtype == jnp.float32
    expected = jax.nn.log_softmax(logits.astype(jnp.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    rounded = jax.nn.log_softmax(logits).astype(jnp.float32)  # what bfloat16 would give
    assert np.max(np.abs(rounded - expected)) > 1e-3
