"""The five seed networks, layer for layer as their seeds describe them.

Each architecture reads like its seed's table: one line per row, named as the seed names it,
with the output size (H=W) in the comment. Arguments left out take the block's defaults
(3x3, stride 1, padding 1, no bias, Conv -> ReLU -> BN).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax

from cifar_flax.errors import CifarFlaxError
from cifar_flax.models.external import HELP, is_external, load_external
from cifar_flax.models.layers import (
    BN,
    BN_RELU,
    NONE,
    Conv2d,
    ConvBlock,
    DepthwiseSeparable,
    GlobalAvgPool,
    InvertedBottleneck,
    Residual,
    Transition,
    channel_dropout,
    log_probabilities,
    torch_bias_init,
    torch_kernel_init,
)


class S7DepthwiseSeparable(nn.Module):
    """Seed 000, 170,304 params: Conv -> ReLU -> BN -> Dropout2d; 3x3 stride-2 downsampling."""

    dropout: float = 0.05

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        block = functools.partial(ConvBlock, dropout=self.dropout)
        trans = functools.partial(block, stride=2, padding=0, use_bias=True)
        x = block(32, name="conv1a")(x, train)  # 32
        x = block(32, name="conv1b")(x, train)  # 32
        x = trans(32, name="trans1")(x, train)  # 15
        x = block(32, name="conv2a")(x, train)  # 15
        x = DepthwiseSeparable(32, 1, dropout=self.dropout, name="conv2_dwsep")(x, train)  # 17
        x = trans(32, name="trans2")(x, train)  # 8
        x = block(64, dilation=2, name="conv3a")(x, train)  # 6
        x = block(64, name="conv3b")(x, train)  # 6
        x = trans(64, name="trans3")(x, train)  # 2
        x = block(64, name="conv4a")(x, train)  # 2
        x = DepthwiseSeparable(10, 1, post=NONE, name="conv4_dwsep")(x, train)  # 4
        return log_probabilities(GlobalAvgPool(name="gap")(x))


class S7DilatedStride(nn.Module):
    """Seed 001: 98,180 params; dilated stride-2 convs downsample; no dropout; raw logits."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dilated_stride = functools.partial(ConvBlock, stride=2, padding=2, dilation=2)
        x = ConvBlock(16, name="convblock1a")(x, train)  # 32
        x = ConvBlock(16, name="convblock1b")(x, train)  # 32
        x = dilated_stride(16, name="dilationblock1")(x, train)  # 16
        x = ConvBlock(32, name="convblock2a")(x, train)  # 16
        x = ConvBlock(32, padding=2, dilation=2, name="convblock2b")(x, train)  # 16
        x = DepthwiseSeparable(64, name="convblock2_dwsep")(x, train)  # 16
        x = Conv2d(32, kernel_size=1, name="dilationblock2_1x1")(x)  # 16
        x = dilated_stride(32, name="dilationblock2")(x, train)  # 8
        x = ConvBlock(64, name="convblock3a")(x, train)  # 8
        x = DepthwiseSeparable(128, name="convblock3_dwsep")(x, train)  # 8
        x = Conv2d(32, kernel_size=1, name="dilationblock3_1x1")(x)  # 8
        x = dilated_stride(32, name="dilationblock3")(x, train)  # 4
        x = ConvBlock(64, name="convblock4a")(x, train)  # 4
        x = ConvBlock(10, name="convblock4b")(x, train)  # 4
        return GlobalAvgPool(name="gap")(x)


class S9InvertedResidual(nn.Module):
    """Seed 002 (ERA-V1 S9): 178,178 params; inverted bottlenecks with four residual adds."""

    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        trans = functools.partial(ConvBlock, stride=2, post=BN)
        shortcut = functools.partial(ConvBlock, kernel_size=1, padding=0, post=BN)
        x = ConvBlock(32, name="convblock1")(x, train)  # 32
        x = Residual(InvertedBottleneck(160, 32, self.dropout, name="convblock2"), name="skip1")(
            x, train
        )  # 32
        x = trans(32, name="convblock3")(x, train)  # 16
        x = Residual(InvertedBottleneck(160, 32, self.dropout, name="convblock4"), name="skip2")(
            x, train
        )  # 16
        x = trans(32, name="convblock6")(x, train)  # 8
        x = Residual(
            InvertedBottleneck(160, 64, self.dropout, name="convblock7"),
            shortcut(64, name="shortcut1"),
            name="skip3",
        )(x, train)  # 8
        x = ConvBlock(64, padding=0, dilation=2, post=BN, name="convblock8")(x, train)  # 4
        x = Residual(
            InvertedBottleneck(320, 132, name="convblock9"),
            shortcut(132, name="shortcut2"),
            name="skip4",
        )(x, train)  # 4
        x = GlobalAvgPool(name="gap")(x)
        x = nn.Dense(
            10, kernel_init=torch_kernel_init, bias_init=torch_bias_init(132), name="linear"
        )(x)
        return log_probabilities(x)


class S7Lite(nn.Module):
    """Seed 003, 97,284 params: Conv -> ReLU -> BN -> Dropout2d; 1x1 stride-2 transitions."""

    dropout: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        block = functools.partial(ConvBlock, dropout=self.dropout)
        x = block(32, name="conv1a")(x, train)  # 32
        x = block(64, name="conv1b")(x, train)  # 32
        x = Transition(32, name="trans1")(x, train)  # 16
        x = block(32, name="conv2a")(x, train)  # 16
        x = DepthwiseSeparable(64, 1, dropout=self.dropout, name="conv2_dwsep")(x, train)  # 18
        x = Transition(32, name="trans2")(x, train)  # 9
        x = block(64, dilation=2, name="conv3a")(x, train)  # 7
        x = block(64, name="conv3b")(x, train)  # 7
        x = Transition(16, name="trans3")(x, train)  # 4
        x = block(32, name="conv4a")(x, train)  # 4
        x = DepthwiseSeparable(10, 1, dropout=self.dropout, name="conv4_dwsep")(x, train)  # 6
        return log_probabilities(GlobalAvgPool(name="gap")(x))


class S6Grouped(nn.Module):
    """Seed 004, 187,418 params: Conv(bias) -> BN -> ReLU, mostly unpadded; a grouped conv."""

    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        block = functools.partial(ConvBlock, padding=0, use_bias=True, post=BN_RELU)
        x = block(16, padding=1, name="conv1a")(x, train)  # 32
        x = block(32, name="conv1b")(x, train)  # 30
        x = block(32, name="conv1c")(x, train)  # 28
        x = block(128, dilation=2, name="conv2a")(x, train)  # 24
        x = block(64, name="conv2b")(x, train)  # 22
        x = block(32, stride=2, padding=1, name="conv2c")(x, train)  # 11
        x = block(128, groups=8, post=BN, name="conv3a_grouped")(x, train)  # 9
        x = block(64, kernel_size=1, name="conv3b")(x, train)  # 9
        x = block(32, name="conv3c")(x, train)  # 7
        x = channel_dropout(self.dropout, name="dropout")(x, deterministic=not train)
        x = block(32, name="conv4a")(x, train)  # 5
        x = block(16, kernel_size=1, post=BN, name="conv4b")(x, train)  # 5
        x = Conv2d(10, use_bias=True, name="conv4c")(x)  # 3
        return log_probabilities(GlobalAvgPool(name="gap")(x))


@dataclasses.dataclass(frozen=True)
class Network:
    """What the package knows of a network: its module, and for a seed network the seed it
    reproduces and the parameter count and receptive field (last conv) its seed reports."""

    module: type[nn.Module]
    seed: str | None = None
    params: int | None = None
    receptive_field: int | None = None


NETWORKS: dict[str, Network] = {
    "s7_dwsep": Network(S7DepthwiseSeparable, "000", 170_304, 83),
    "s7_dilated_stride": Network(S7DilatedStride, "001", 98_180, 97),
    "s9_inverted_residual": Network(S9InvertedResidual, "002", 178_178, 47),
    "s7_lite": Network(S7Lite, "003", 97_284, 69),
    "s6_grouped": Network(S6Grouped, "004", 187_418, 31),
}


def network(name: str) -> Network:
    """The record of the seed network `name`, or of the user's own (`file.py:Class`)."""
    if is_external(name):
        return Network(load_external(name))
    try:
        return NETWORKS[name]
    except KeyError:
        raise CifarFlaxError(
            f"unknown model {name!r}; choose one of: {', '.join(NETWORKS)} (--config.model=NAME), "
            f"or your own: {HELP}"
        ) from None


def create_model(name: str) -> nn.Module:
    """The network `name` (a seed network's name, or `file.py:Class`), ready to init."""
    return network(name).module()
