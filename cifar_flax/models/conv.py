"""2-D convolution with the same parameters and outputs on every backend, fast on the CPU.

XLA's CPU backend runs grouped and depthwise convolutions (`feature_group_count > 1`) far slower
than dense ones (jax-ml/jax#23713, #26266; measurements in docs/performance.md). On the CPU,
therefore:

* depthwise (one input channel per group) becomes k*k shifted multiply-adds, which XLA fuses
  into a single loop over the output, and so does its input gradient (`depthwise_backward`);
* grouped becomes a dense conv with a block-diagonal kernel, built from the grouped kernel
  (more FLOPs, but on the dense path XLA runs well; gradients flow to the grouped kernel only);
* 1x1 convs, and dense convs whose shape favours it (`prefers_patches`), become one 2-D matrix
  product over all pixels (of the k*k shifted windows side by side: im2col), which XLA's CPU
  dot runs faster than its conv; over 128+ input channels a stride-1 one runs tap by tap
  instead (`tapwise_conv`: k*k products summed in a loop, at the same speed without the
  patches, the largest buffers of a train step), or from jaxlib 0.12 as XLA's own conv, which
  trains it faster still;
* from jaxlib 0.12, a kxk conv that is not depthwise runs XLA's own conv where nothing
  differentiates it (evaluation: `evaluated_natively`), and the paths above only in training:
  that XLA's CPU conv runs the forward pass alone as fast as the matrix products or faster,
  but not the gradients.

Which path is fastest changed between jaxlib 0.10 and 0.12; the choices are measured per
jaxlib (`FAST_XLA_CPU_CONV`; docs/performance.md, `scripts/conv_paths.py`).
All take the `feature_group_count` kernel layout (HWIO with in // groups inputs), so parameters
and checkpoints are the same whichever path runs; other backends keep the native grouped conv.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

DIMENSIONS = ("NHWC", "HWIO", "NHWC")

JAXLIB = tuple(int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])

# jaxlib 0.12's CPU convolutions, against 0.10's: the forward pass alone as fast as our paths
# or faster, and stride-1 convs over wide inputs trained faster than tap by tap; on the whole
# networks, 0.10 evaluated no faster with them (docs/performance.md).
FAST_XLA_CPU_CONV = JAXLIB >= (0, 12)
# Input channels from which a stride-1 dense kxk conv runs on the CPU neither as patches nor,
# before jaxlib 0.12, as XLA's conv (slower or larger), but tap by tap (`tapwise_conv`).
WIDE_INPUT_FEATURES = 128


def native_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int, groups: int
) -> jax.Array:
    """`lax.conv_general_dilated` with PyTorch-style symmetric padding."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=DIMENSIONS,
        feature_group_count=groups,
    )


def pad_spatially(x: jax.Array, padding: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def tap_start(index: jax.Array, size: int, dilation: int) -> tuple[int, jax.Array, jax.Array, int]:
    """Where kernel tap `index` (row by row over the k x k taps) first reads the padded input:
    the start of its window for `lax.dynamic_slice` in the loops over the taps below."""
    row, column = jnp.divmod(index, size)
    return 0, row * dilation, column * dilation, 0


def shifted_windows(
    x: jax.Array, size: int, stride: int, padding: int, dilation: int
) -> list[jax.Array]:
    """The k*k strided views of the padded input that meet kernel tap (i, j), row by row."""
    x = pad_spatially(x, padding)
    batch, height, width, channels = x.shape
    out_height = (height - dilation * (size - 1) - 1) // stride + 1
    out_width = (width - dilation * (size - 1) - 1) // stride + 1
    return [
        lax.slice(
            x,
            (0, i * dilation, j * dilation, 0),
            (
                batch,
                i * dilation + (out_height - 1) * stride + 1,
                j * dilation + (out_width - 1) * stride + 1,
                channels,
            ),
            (1, stride, stride, 1),
        )
        for i in range(size)
        for j in range(size)
    ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def shifted_depthwise_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int
) -> jax.Array:
    """Depthwise conv as a sum of k*k strided windows, each times one tap of the kernel.

    `kernel` is (k, k, 1, C * multiplier); output channel o reads input channel o // multiplier,
    as with `feature_group_count = C`.
    """
    taps = kernel.reshape(-1, kernel.shape[-1])
    windows = shifted_windows(
        repeat_channels(x, kernel), kernel.shape[0], stride, padding, dilation
    )
    return sum(window * tap for window, tap in zip(windows, taps, strict=True))


def repeat_channels(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The input with each channel repeated for its `multiplier` outputs."""
    multiplier = kernel.shape[-1] // x.shape[-1]
    return jnp.repeat(x, multiplier, axis=-1) if multiplier > 1 else x


def depthwise_forward(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The forward pass, keeping the input and kernel for `depthwise_backward`."""
    return shifted_depthwise_conv(x, kernel, stride, padding, dilation), (x, kernel)


def depthwise_backward(
    stride: int,
    padding: int,
    dilation: int,
    residuals: tuple[jax.Array, jax.Array],
    grad: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Both gradients as shifted multiply-adds.

    Autodiff of the forward sends the input gradient through k*k pads and adds; as a depthwise
    conv of the output gradient with the flipped kernel (a transposed conv) it is one fused
    loop, which trains the network with the largest depthwise layers (s9_inverted_residual)
    faster (docs/performance.md).
    """
    x, kernel = residuals
    size = kernel.shape[0]
    span = dilation * (size - 1)
    no_padding = (0, 0, 0)
    spread = lax.pad(
        grad,
        jnp.zeros((), grad.dtype),
        [
            no_padding,
            *(transposed_padding(extent, span, stride, padding) for extent in x.shape[1:3]),
            no_padding,
        ],
    )
    grad_x = shifted_depthwise_conv(spread, kernel[::-1, ::-1], 1, 0, dilation)
    grad_x = grad_x.reshape(*x.shape, -1).sum(-1)  # each input channel's `multiplier` outputs
    grad_kernel = depthwise_kernel_gradient(
        repeat_channels(x, kernel), grad, size, stride, padding, dilation
    )
    return grad_x, grad_kernel.reshape(kernel.shape)


def depthwise_kernel_gradient(
    x: jax.Array, grad: jax.Array, size: int, stride: int, padding: int, dilation: int
) -> jax.Array:
    """(k*k, C): each tap's window of the padded input times the output gradient, summed.

    A loop over the taps, one window at a time: written as k*k window products, XLA kept every
    window live at once (s9_inverted_residual: eight of 80 MiB, half its train step's buffers),
    where one loop fuses each window's slice into its reduction, at the same speed.
    """
    x = pad_spatially(x, padding)
    batch, out_height, out_width, channels = grad.shape
    extent = (batch, (out_height - 1) * stride + 1, (out_width - 1) * stride + 1, channels)

    def tap(index: jax.Array) -> jax.Array:
        window = lax.dynamic_slice(x, tap_start(index, size, dilation), extent)
        return jnp.sum(window[:, ::stride, ::stride] * grad, axis=(0, 1, 2))

    return lax.map(tap, jnp.arange(size * size))


def transposed_padding(extent: int, span: int, stride: int, padding: int) -> tuple[int, int, int]:
    """`lax.pad`'s (low, high, interior) for one spatial axis of an output gradient.

    The interior zeros spread it back onto the stride-1 grid; the edges (negative: a crop) make
    a stride-1 conv of span `span` with the flipped kernel return exactly `extent` positions.
    """
    low = span - padding
    return low, low + (extent + 2 * padding - span - 1) % stride, stride - 1


shifted_depthwise_conv.defvjp(depthwise_forward, depthwise_backward)


def patches_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int
) -> jax.Array:
    """Dense conv as one matrix product: the k*k shifted windows side by side (im2col), times
    the kernel reshaped to (k*k*in, out)."""
    size, _, in_features, features = kernel.shape
    windows = shifted_windows(x, size, stride, padding, dilation)
    patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
    return matmul_over_pixels(patches, kernel.reshape(size * size * in_features, features))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def tapwise_conv(x: jax.Array, kernel: jax.Array, padding: int, dilation: int) -> jax.Array:
    """A stride-1 dense conv as k*k matrix products, one per kernel tap, summed in a loop: no
    im2col patches, forward or backward.

    Through `patches_conv`, autodiff keeps the patches (k*k times the input) for the kernel
    gradient and builds an input gradient of their size, and XLA holds the k*k windows beside
    the patches while it concatenates them: s6_grouped's 24x24x128 -> 64 conv took 560 MiB of
    buffers that way at batch 128, 76 MiB tap by tap, at the same speed. With fewer input
    channels the smaller products are slower than one large one (docs/performance.md), hence
    `WIDE_INPUT_FEATURES`.
    """
    size, _, in_features, features = kernel.shape
    x = pad_spatially(x, padding)
    batch, height, width, _ = x.shape
    span = dilation * (size - 1)
    extent = (batch, height - span, width - span, in_features)
    taps = kernel.reshape(size * size, in_features, features)

    def tap(y: jax.Array, index: jax.Array) -> tuple[jax.Array, None]:
        window = lax.dynamic_slice(x, tap_start(index, size, dilation), extent)
        return y + jnp.dot(window.reshape(-1, in_features), taps[index]), None

    y = jnp.zeros((batch * extent[1] * extent[2], features), x.dtype)
    y, _ = lax.scan(tap, y, jnp.arange(size * size))
    return y.reshape(*extent[:3], features)


def tapwise_forward(
    x: jax.Array, kernel: jax.Array, padding: int, dilation: int
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return tapwise_conv(x, kernel, padding, dilation), (x, kernel)


def tapwise_backward(
    padding: int, dilation: int, residuals: tuple[jax.Array, jax.Array], grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Both gradients in one loop over the taps, each reading one window of the padded input."""
    x, kernel = residuals
    size, _, in_features, features = kernel.shape
    height, width = x.shape[1:3]
    x = pad_spatially(x, padding)
    extent = (*grad.shape[:3], in_features)
    taps = kernel.reshape(size * size, in_features, features)
    pixels = grad.reshape(-1, features)

    def tap(grad_x: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
        start = tap_start(index, size, dilation)
        window = lax.dynamic_slice(x, start, extent).reshape(-1, in_features)
        grad_tap = jnp.dot(window.T, pixels)
        spread = jnp.dot(pixels, taps[index].T).reshape(extent)
        summed = lax.dynamic_slice(grad_x, start, extent) + spread
        return lax.dynamic_update_slice(grad_x, summed, start), grad_tap

    grad_x, grad_kernel = lax.scan(tap, jnp.zeros_like(x), jnp.arange(size * size))
    grad_x = grad_x[:, padding : padding + height, padding : padding + width]
    return grad_x, grad_kernel.reshape(kernel.shape)


tapwise_conv.defvjp(tapwise_forward, tapwise_backward)


def matmul_over_pixels(x: jax.Array, matrix: jax.Array) -> jax.Array:
    """(N, H, W, K) @ (K, F) as one 2-D matrix product over all N*H*W pixels.

    XLA's CPU dot runs the 2-D form, and above all its kernel gradient (a product contracting
    the pixels), faster than a 4-D dot or a 1x1 conv.
    """
    batch, height, width, _ = x.shape
    product = jnp.dot(x.reshape(batch * height * width, -1), matrix)
    return product.reshape(batch, height, width, matrix.shape[-1])


def block_diagonal_kernel(kernel: jax.Array, groups: int) -> jax.Array:
    """The dense (k, k, in, out) kernel equal to a grouped (k, k, in // groups, out) one."""
    size, _, group_in, features = kernel.shape
    group_out = features // groups
    grouped = kernel.reshape(size, size, group_in, groups, group_out)
    eye = jnp.eye(groups, dtype=kernel.dtype)
    # dense[h, w, g * group_in + i, G * group_out + o] = grouped[h, w, i, G, o] * [g == G]
    dense = jnp.einsum("hwiGo,gG->hwgiGo", grouped, eye)
    return dense.reshape(size, size, groups * group_in, features)


def batched_group_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int, groups: int
) -> jax.Array:
    """A grouped conv as one matrix product batched over the groups: each group's k*k windows
    (im2col) times its own slice of the kernel, without the block-diagonal kernel's zeros."""
    size, _, group_in, features = kernel.shape
    patches = jnp.stack(shifted_windows(x, size, stride, padding, dilation), axis=3)
    batch, height, width, taps, _ = patches.shape
    patches = patches.reshape(batch, height, width, taps, groups, group_in)
    per_group = kernel.reshape(taps, group_in, groups, features // groups)
    y = jnp.einsum("nhwtgi,tigo->nhwgo", patches, per_group)
    return y.reshape(batch, height, width, features)


def dense_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int
) -> jax.Array:
    """A dense conv as a matrix product, tap by tap or as XLA's conv, whichever trains it
    fastest on this jaxlib's CPU (`wide_input`, `prefers_patches`)."""
    size = kernel.shape[0]
    if wide_input(size, stride, x.shape[-1]):
        if not FAST_XLA_CPU_CONV:
            return tapwise_conv(x, kernel, padding, dilation)
    elif prefers_patches(size, stride, dilation, x.shape[-1], kernel.shape[-1]):
        return patches_conv(x, kernel, stride, padding, dilation)
    return native_conv(x, kernel, stride, padding, dilation, 1)


def wide_input(kernel_size: int, stride: int, in_features: int) -> bool:
    """A stride-1 kxk conv over `WIDE_INPUT_FEATURES` or more input channels."""
    return kernel_size > 1 and stride == 1 and in_features >= WIDE_INPUT_FEATURES


def trained_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int, groups: int
) -> jax.Array:
    """The CPU path that a grouped or dense conv trains with."""
    if groups > 1:
        kernel = block_diagonal_kernel(kernel, groups)
    return dense_conv(x, kernel, stride, padding, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def evaluated_natively(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int, groups: int
) -> jax.Array:
    """XLA's own conv where nothing differentiates it, `trained_conv` (forward and gradients)
    where something does."""
    return native_conv(x, kernel, stride, padding, dilation, groups)


def evaluated_natively_forward(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int, groups: int
) -> tuple[jax.Array, Callable[[jax.Array], tuple[jax.Array, jax.Array]]]:
    return jax.vjp(
        functools.partial(
            trained_conv, stride=stride, padding=padding, dilation=dilation, groups=groups
        ),
        x,
        kernel,
    )


def evaluated_natively_backward(
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    vjp: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    grad: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    del stride, padding, dilation, groups  # in `vjp`
    return vjp(grad)


evaluated_natively.defvjp(evaluated_natively_forward, evaluated_natively_backward)


def subsampled_conv(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, dilation: int
) -> jax.Array:
    """A strided conv whose dilation and padding are multiples of the stride, as a stride-1 conv
    of every stride-th pixel: its taps, `dilation` apart from a start `padding` before the edge,
    meet no other pixel (e.g. stride 2, dilation 2, padding 2: a plain 3x3 conv with padding 1
    of the even pixels). Its input gradient then needs no zeros spread between pixels."""
    return dense_conv(x[:, ::stride, ::stride], kernel, 1, padding // stride, dilation // stride)


def space_to_batch_conv(x: jax.Array, kernel: jax.Array, padding: int, dilation: int) -> jax.Array:
    """A dilated stride-1 conv as one undilated conv over the dilation**2 interleaved phases of
    the padded input, stacked on the batch axis: output pixel (d*i + a, d*j + b) reads only
    phase (a, b), at (i, j) plus the kernel's offsets."""
    batch, height, width, channels = x.shape
    span = dilation * (kernel.shape[0] - 1)
    out_height, out_width = height + 2 * padding - span, width + 2 * padding - span
    # Pad to multiples of `dilation`; the extra rows and columns only reach outputs cropped below.
    high = [-(extent + 2 * padding) % dilation + padding for extent in (height, width)]
    x = jnp.pad(x, ((0, 0), (padding, high[0]), (padding, high[1]), (0, 0)))
    rows, columns = x.shape[1] // dilation, x.shape[2] // dilation
    phases = x.reshape(batch, rows, dilation, columns, dilation, channels)
    phases = phases.transpose(2, 4, 0, 1, 3, 5).reshape(-1, rows, columns, channels)
    y = dense_conv(phases, kernel, 1, 0, 1)
    _, rows, columns, features = y.shape
    y = y.reshape(dilation, dilation, batch, rows, columns, features).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(batch, rows * dilation, columns * dilation, features)[
        :, :out_height, :out_width
    ]


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    backend: str | None = None,
) -> jax.Array:
    """NHWC conv with a `feature_group_count`-layout kernel, by the fastest path for `backend`."""
    if (backend or jax.default_backend()) != "cpu":
        return native_conv(x, kernel, stride, padding, dilation, groups)
    if x.dtype != jnp.float32:
        # XLA's CPU backend has no bfloat16 arithmetic of its own; in float32 the sums of
        # products (the kernel gradients above all) are not rounded to 8 bits at every step.
        y = conv2d(
            x.astype(jnp.float32),
            kernel.astype(jnp.float32),
            stride,
            padding,
            dilation,
            groups,
            backend,
        )
        return y.astype(x.dtype)
    if groups > 1 and kernel.shape[2] == 1:  # one input channel per group: depthwise
        return shifted_depthwise_conv(x, kernel, stride, padding, dilation)
    if kernel.shape[0] == 1 or not FAST_XLA_CPU_CONV:
        return trained_conv(x, kernel, stride, padding, dilation, groups)
    return evaluated_natively(x, kernel, stride, padding, dilation, groups)


def prefers_patches(
    kernel_size: int, stride: int, dilation: int, in_features: int, features: int
) -> bool:
    """Whether the matrix-product form beats XLA's CPU conv in training (forward + backward).

    Always for 1x1 convs. Timed per layer, forward + backward, over the 36 kxk convs of the
    five networks, XLA's conv won only at stride 1, undilated, over 8+ input channels and to
    fewer than 64 outputs; everywhere else the matrix product won (docs/performance.md).
    """
    if kernel_size == 1:
        return True
    return stride > 1 or dilation > 1 or in_features < 8 or features >= 64
