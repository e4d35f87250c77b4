"""Building blocks of the seed networks, as small named Flax linen modules (NHWC).

Every layer follows PyTorch's conventions where the seeds depend on them: explicit symmetric
padding (several seeds pad a 1x1 conv by 1, or a 3x3 conv by 0), PyTorch's default init,
and BatchNorm with PyTorch's momentum 0.1 (0.9 in Flax terms) and eps 1e-5. Parameters keep
the `flax.linen.Conv` layout, HWIO kernels with `in_features // groups` inputs, so checkpoints
move freely between backends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_flax.models.conv import conv2d

# PyTorch's default Conv/Linear weight init, kaiming_uniform(a=sqrt(5)), is U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias init, U(+-1/sqrt(fan_in)); fan_in counts one group's inputs."""
    bound = 1 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


# The operations that may follow a convolution inside a ConvBlock, in the seeds' orders.
RELU_BN = ("relu", "bn")  # Conv -> ReLU -> BN (seeds 000, 001, 002, 003)
BN_RELU = ("bn", "relu")  # Conv -> BN -> ReLU (seed 004)
BN = ("bn",)  # Conv -> BN (seed 002's transitions, seed 004's grouped and 1x1 convs)
RELU = ("relu",)  # Conv -> ReLU (seed 003's transitions)
NONE = ()  # a bare convolution


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def channel_dropout(rate: float, name: str | None = None) -> nn.Dropout:
    """PyTorch's Dropout2d in NHWC: drops whole feature maps (broadcast over H and W)."""
    return nn.Dropout(rate, broadcast_dims=(1, 2), name=name)


class Conv2d(nn.Module):
    """`torch.nn.Conv2d` in NHWC: explicit padding, dilation, groups, bias off by default."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"{self.name}: groups={self.groups} must divide both in_features={in_features} "
                f"and features={self.features}"
            )
        group_in = in_features // self.groups
        kernel = self.param(
            "kernel",
            torch_kernel_init,
            (self.kernel_size, self.kernel_size, group_in, self.features),
        )
        y = conv2d(x, kernel, self.stride, self.padding, self.dilation, self.groups)
        if self.use_bias:
            fan_in = group_in * self.kernel_size**2
            y = y + self.param("bias", torch_bias_init(fan_in), (self.features,))
        return y


class ConvBlock(nn.Module):
    """A Conv2d followed by `post` (ReLU/BN in the seed's order), then optional Dropout2d."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    groups: int = 1
    use_bias: bool = False
    post: Sequence[str] = RELU_BN
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = Conv2d(
            self.features,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.use_bias,
            name="conv",
        )(x)
        for op in self.post:
            if op == "relu":
                x = nn.relu(x)
            elif op == "bn":
                x = batch_norm(train, name="bn")(x)
            else:
                raise ValueError(f"{self.name}: unknown post-conv op {op!r}; use 'relu' or 'bn'")
        if self.dropout:
            x = channel_dropout(self.dropout, name="dropout")(x, deterministic=not train)
        return x


class DepthwiseSeparable(nn.Module):
    """A bare 3x3 depthwise conv, then a 1x1 pointwise ConvBlock (seeds 000, 001, 003).

    The seeds pad the pointwise conv differently (000 and 003 pad the 1x1 by 1, which grows the
    map by 2), hence `pointwise_padding`.
    """

    features: int
    pointwise_padding: int = 0
    post: Sequence[str] = RELU_BN
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        channels = x.shape[-1]
        x = Conv2d(channels, 3, padding=1, groups=channels, name="depthwise")(x)
        return ConvBlock(
            self.features,
            kernel_size=1,
            padding=self.pointwise_padding,
            post=self.post,
            dropout=self.dropout,
            name="pointwise",
        )(x, train)


class Transition(ConvBlock):
    """1x1 stride-2 conv with bias, then ReLU: downsampling instead of max-pooling (seed 003)."""

    kernel_size: int = 1
    stride: int = 2
    padding: int = 0
    use_bias: bool = True
    post: Sequence[str] = RELU


class InvertedBottleneck(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 project, each Conv -> ReLU -> BN, then Dropout (002).

    The dropout is element-wise (`nn.Dropout` on a 4-D tensor in the seed), not Dropout2d.
    """

    expanded: int
    features: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = ConvBlock(self.expanded, kernel_size=1, padding=0, name="expand")(x, train)
        x = ConvBlock(self.expanded, groups=self.expanded, name="depthwise")(x, train)
        x = ConvBlock(self.features, kernel_size=1, padding=0, name="project")(x, train)
        if self.dropout:
            x = nn.Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        return x


class Residual(nn.Module):
    """`branch(x) + shortcut(x)`, the shortcut being the identity when not given.

    Networks branch only through this module, which is what lets the summary follow the data
    flow (and compute the receptive field) from the order in which layers are called.
    """

    branch: nn.Module
    shortcut: nn.Module | None = None

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.branch(x, train)
        return y + (x if self.shortcut is None else self.shortcut(x, train))


class GlobalAvgPool(nn.Module):
    """Global average pooling: the seeds' AdaptiveAvgPool2d(1) and AvgPool2d(H) on an HxH map."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2))


def log_probabilities(logits: jax.Array) -> jax.Array:
    """`log_softmax` in float32 whatever the compute dtype, as PyTorch's autocast runs it: in
    bfloat16 a log-probability near 0 beside a logit near 5 would be rounded to 1/32."""
    return nn.log_softmax(logits.astype(jnp.float32))
