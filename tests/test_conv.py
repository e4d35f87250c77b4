"""The CPU convolution paths equal lax.conv_general_dilated with feature_group_count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cifar_flax.models.conv import block_diagonal_kernel, conv2d, native_conv

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
    (32, 64, 1, 1, 1, 0, 1, 8),  # 1x1, as a matrix product
    (16, 24, 1, 1, 2, 1, 1, 9),  # 1x1 with PyTorch's padding and a stride
    (12, 12, 12, 1, 1, 1, 1, 7),  # depthwise 1x1 with padding: the input gradient crops
]


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "k", "stride", "padding", "dilation", "size"), CASES
)
def test_cpu_path_equals_native_forward_and_gradients(
    cin, cout, groups, k, stride, padding, dilation, size
):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (4, size, size, cin))
    kernel = jax.random.normal(kk, (k, k, cin // groups, cout)) / k

    def loss(path, x, kernel):
        y = path(x, kernel)
        return jnp.sum(jnp.sin(y)), y  # a non-linear loss: gradients differ per position

    def fast(x, kernel):
        return conv2d(x, kernel, stride, padding, dilation, groups, backend="cpu")

    def native(x, kernel):
        return native_conv(x, kernel, stride, padding, dilation, groups)

    def forward_and_gradients(path):  # jitted: one compilation instead of one per operation
        return jax.jit(jax.value_and_grad(lambda x, w: loss(path, x, w), (0, 1), has_aux=True))

    (_, y_fast), grads_fast = forward_and_gradients(fast)(x, kernel)
    (_, y_native), grads_native = forward_and_gradients(native)(x, kernel)
    # 1e-5 of each result's scale: the kernel gradient sums N*H*W float32 products, so its
    # rounding differs with the summation order.
    for fast_value, native_value in zip(
        (y_fast, *grads_fast), (y_native, *grads_native), strict=True
    ):
        scale = float(jnp.max(jnp.abs(native_value)))
        np.testing.assert_allclose(fast_value, native_value, atol=1e-5 * scale, rtol=0)


def test_block_diagonal_kernel_layout():
    kernel = jnp.arange(2 * 6, dtype=jnp.float32).reshape(1, 1, 2, 6)  # 4 in, 6 out, 2 groups
    dense = block_diagonal_kernel(kernel, groups=2)[0, 0]
    np.testing.assert_array_equal(dense[:2, :3], kernel[0, 0, :, :3])
    np.testing.assert_array_equal(dense[2:, 3:], kernel[0, 0, :, 3:])
    assert not dense[:2, 3:].any() and not dense[2:, :3].any()


def test_other_backends_keep_the_native_conv():
    x = jnp.ones((1, 5, 5, 4))
    kernel = jnp.ones((3, 3, 1, 4))
    jaxpr = jax.make_jaxpr(lambda x, w: conv2d(x, w, groups=4, backend="gpu"))(x, kernel)
    assert "feature_group_count=4" in str(jaxpr)
    jaxpr = jax.make_jaxpr(lambda x, w: conv2d(x, w, groups=4, backend="cpu"))(x, kernel)
    assert "conv_general_dilated" not in str(jaxpr)


def test_cpu_dense_paths():
    x = jnp.ones((1, 9, 9, 64))
    as_product = jax.make_jaxpr(lambda x, w: conv2d(x, w, padding=1, backend="cpu"))
    assert "conv_general_dilated" not in str(as_product(x, jnp.ones((3, 3, 64, 64))))
    native = jax.make_jaxpr(lambda x, w: conv2d(x, w, padding=1, backend="cpu"))
    assert "conv_general_dilated" in str(native(x[..., :16], jnp.ones((3, 3, 16, 8))))
    pointwise = jax.make_jaxpr(lambda x, w: conv2d(x, w, backend="cpu"))
    assert "conv_general_dilated" not in str(pointwise(x, jnp.ones((1, 1, 64, 8))))
