"""The CPU convolution paths equal lax.conv_general_dilated with feature_group_count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax.models import conv
from cifar_flax.models.conv import (
    batched_group_conv,
    block_diagonal_kernel,
    conv2d,
    native_conv,
    space_to_batch_conv,
    subsampled_conv,
)

CASES = [
    # (in channels, out channels, groups, kernel, stride, padding, dilation, size)
    (32, 32, 32, 3, 1, 1, 1, 15),  # seed 000's depthwise
    (160, 160, 160, 3, 1, 1, 1, 8),  # seed 002's depthwise
    (64, 64, 64, 3, 2, 1, 1, 9),  # strided
    (16, 16, 16, 3, 1, 2, 2, 12),  # dilated
    (8, 16, 8, 3, 2, 0, 2, 11),  # depth multiplier 2, stride, dilation, no padding
    (32, 128, 8, 3, 1, 0, 1, 11),  # seed 004's grouped conv
    (12, 24, 3, 1, 1, 1, 1, 7),  # grouped 1x1 with PyTorch's padding
    (64, 64, 1, 3, 1, 1, 1, 7),  # dense, as a matrix product (64 channels)
    (16, 32, 1, 3, 1, 0, 2, 12),  # dense, as a matrix product (unpadded, dilated)
    (16, 16, 1, 3, 2, 2, 2, 16),  # dense, as a matrix product (strided, dilated)
    (16, 16, 1, 3, 1, 1, 1, 10),  # dense, native (stride 1, undilated, few outputs)
    (128, 64, 1, 3, 1, 0, 1, 8),  # dense, tap by tap (seed 004's conv over 128 channels)
    (128, 32, 1, 3, 1, 2, 2, 9),  # dense, tap by tap, padded and dilated
    (32, 64, 1, 1, 1, 0, 1, 8),  # 1x1, as a matrix product
    (16, 24, 1, 1, 2, 1, 1, 9),  # 1x1 with PyTorch's padding and a stride
    (12, 12, 12, 1, 1, 1, 1, 7),  # depthwise 1x1 with padding: the input gradient crops
]


def forward_and_gradients(path, x, kernel):
    """The output, and both gradients for a random output gradient (so that they differ per
    position), jitted: one compilation instead of one per operation."""

    def run(x, kernel):
        y, vjp = jax.vjp(path, x, kernel)
        grad = jax.random.normal(jax.random.key(2), y.shape).astype(y.dtype)
        return y, *vjp(grad)

    return jax.jit(run)(x, kernel)


def assert_same_conv(path, native, shapes, dtype=jnp.float32):
    """`path` equals `native` in output and gradients: within 1e-5 of each result's largest
    magnitude in float32 (the kernel gradient sums N*H*W products, so its rounding differs
    with the summation order). In bfloat16, within 1e-2 of the float32 result from the same
    (bfloat16) inputs: two bfloat16 paths round their partial sums differently, each by up to a
    few of its 8-bit mantissa's steps, so each is held to the exact result rather than to the
    other."""
    x_shape, kernel_shape = shapes
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, x_shape).astype(dtype)
    kernel = (jax.random.normal(kk, kernel_shape) / kernel_shape[0]).astype(dtype)
    tolerance = 1e-5 if dtype == jnp.float32 else 1e-2
    float32 = (x.astype(jnp.float32), kernel.astype(jnp.float32))
    for got, expected in zip(
        forward_and_gradients(path, x, kernel),
        forward_and_gradients(native, *float32),
        strict=True,
    ):
        assert got.dtype == dtype
        expected = np.asarray(expected, np.float32)
        scale = float(np.max(np.abs(expected)))
        np.testing.assert_allclose(np.asarray(got, np.float32), expected, atol=tolerance * scale)


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "k", "stride", "padding", "dilation", "size"), CASES
)
def test_cpu_path_equals_native_forward_and_gradients(
    cin, cout, groups, k, stride, padding, dilation, size
):
    assert_same_conv(
        lambda x, w: conv2d(x, w, stride, padding, dilation, groups, backend="cpu"),
        lambda x, w: native_conv(x, w, stride, padding, dilation, groups),
        ((4, size, size, cin), (k, k, cin // groups, cout)),
    )


SUBSAMPLED = [
    # (in, out, kernel, stride, padding, dilation, size)
    (16, 16, 3, 2, 2, 2, 32),  # seed 001's dilated stride-2 convs
    (16, 8, 3, 2, 2, 2, 15),  # an odd input
    (8, 8, 3, 3, 3, 3, 20),  # stride 3
    (8, 8, 3, 2, 0, 2, 11),  # unpadded
    (8, 16, 3, 2, 2, 4, 17),  # dilation twice the stride: a dilated conv of the even pixels
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("cin", "cout", "k", "stride", "padding", "dilation", "size"), SUBSAMPLED)
def test_subsampled_conv_equals_the_strided_dilated_conv(
    cin, cout, k, stride, padding, dilation, size, dtype
):
    assert_same_conv(
        lambda x, w: subsampled_conv(x, w, stride, padding, dilation),
        lambda x, w: native_conv(x, w, stride, padding, dilation, 1),
        ((2, size, size, cin), (k, k, cin, cout)),
        dtype,
    )


PHASES = [
    # (in, out, kernel, padding, dilation, size)
    (32, 64, 3, 1, 2, 8),  # seed 000's conv3a
    (64, 64, 3, 1, 2, 9),  # seed 003's conv3a (odd size)
    (32, 128, 3, 0, 2, 28),  # seed 004's conv2a (unpadded)
    (32, 32, 3, 2, 2, 16),  # seed 001's convblock2b
    (8, 8, 3, 3, 3, 13),  # dilation 3
    (8, 8, 5, 0, 3, 14),  # a 5x5 kernel
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(("cin", "cout", "k", "padding", "dilation", "size"), PHASES)
def test_space_to_batch_conv_equals_the_dilated_conv(cin, cout, k, padding, dilation, size, dtype):
    assert_same_conv(
        lambda x, w: space_to_batch_conv(x, w, padding, dilation),
        lambda x, w: native_conv(x, w, 1, padding, dilation, 1),
        ((2, size, size, cin), (k, k, cin, cout)),
        dtype,
    )


GROUPED = [case for case in CASES if case[2] > 1]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize(
    ("cin", "cout", "groups", "k", "stride", "padding", "dilation", "size"), GROUPED
)
def test_batched_group_conv_equals_the_grouped_conv(
    cin, cout, groups, k, stride, padding, dilation, size, dtype
):
    assert_same_conv(
        lambda x, w: batched_group_conv(x, w, stride, padding, dilation, groups),
        lambda x, w: native_conv(x, w, stride, padding, dilation, groups),
        ((2, size, size, cin), (k, k, cin // groups, cout)),
        dtype,
    )


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "k", "stride", "padding", "dilation", "size"), CASES[::3]
)
def test_cpu_path_holds_in_bfloat16(cin, cout, groups, k, stride, padding, dilation, size):
    assert_same_conv(
        lambda x, w: conv2d(x, w, stride, padding, dilation, groups, backend="cpu"),
        lambda x, w: native_conv(x, w, stride, padding, dilation, groups),
        ((4, size, size, cin), (k, k, cin // groups, cout)),
        jnp.bfloat16,
    )


def test_block_diagonal_kernel_layout():
    kernel = jnp.arange(2 * 6, dtype=jnp.float32).reshape(1, 1, 2, 6)  # 4 in, 6 out, 2 groups
    dense = block_diagonal_kernel(kernel, groups=2)[0, 0]
    np.testing.assert_array_equal(dense[:2, :3], kernel[0, 0, :, :3])
    np.testing.assert_array_equal(dense[2:, 3:], kernel[0, 0, :, 3:])
    assert not dense[:2, 3:].any() and not dense[2:, :3].any()


def convolutions(path, x, kernel):
    """XLA convolutions in what evaluation compiles for `path` (the forward alone) and in what
    training compiles (forward and both gradients), as StableHLO."""
    evaluation = jax.jit(path).lower(x, kernel).as_text()

    def train(x, kernel):
        y, vjp = jax.vjp(path, x, kernel)
        return vjp(jnp.ones_like(y))

    training = jax.jit(train).lower(x, kernel).as_text()
    return evaluation.count("stablehlo.convolution"), training.count("stablehlo.convolution")


def test_other_backends_keep_the_native_conv():
    x = jnp.ones((1, 5, 5, 4))
    kernel = jnp.ones((3, 3, 1, 4))
    jaxpr = jax.make_jaxpr(lambda x, w: conv2d(x, w, groups=4, backend="gpu"))(x, kernel)
    assert "feature_group_count=4" in str(jaxpr)


def on_the_cpu(stride=1, padding=0, groups=1):
    return lambda x, w: conv2d(x, w, stride, padding, 1, groups, backend="cpu")


def test_depthwise_and_1x1_convs_never_run_xlas_conv_on_the_cpu():
    x = jnp.ones((2, 9, 9, 64))
    assert convolutions(on_the_cpu(padding=1, groups=64), x, jnp.ones((3, 3, 1, 64))) == (0, 0)
    assert convolutions(on_the_cpu(), x, jnp.ones((1, 1, 64, 8))) == (0, 0)


def test_kxk_convs_evaluate_and_train_by_the_paths_measured_for_this_jaxlib():
    x = jnp.ones((2, 9, 9, 64))
    forward = 1 if conv.FAST_XLA_CPU_CONV else 0  # XLA's conv evaluates, from jaxlib 0.12
    as_product = convolutions(on_the_cpu(padding=1), x, jnp.ones((3, 3, 64, 64)))
    assert as_product == (forward, 0)  # trained as a matrix product
    grouped = convolutions(on_the_cpu(groups=8), x[..., :32], jnp.ones((3, 3, 4, 128)))
    assert grouped == (forward, 0)  # trained with a block-diagonal kernel, as a matrix product
    native = convolutions(on_the_cpu(padding=1), x[..., :16], jnp.ones((3, 3, 16, 8)))
    assert native == (1, 2)  # XLA's conv, and both gradients (the output is unused)
    wide = convolutions(on_the_cpu(), jnp.ones((2, 9, 9, 128)), jnp.ones((3, 3, 128, 64)))
    assert wide == ((1, 2) if conv.FAST_XLA_CPU_CONV else (0, 0))  # natively, or tap by tap
