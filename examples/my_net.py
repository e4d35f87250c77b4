r"""A starting point for your own network, in plain flax.linen: copy it, change it, check it.

    python -m cifar_flax.main --config=configs/s7.py --mode=summary \
        --config.model=examples/my_net.py:MyNet
    python -m cifar_flax.main --config=configs/s7.py --config.model=examples/my_net.py:MyNet

It meets the assignment: under 200k parameters, a receptive field over 44, a depthwise and a
dilated convolution, strided convolutions instead of max-pooling, and global average pooling.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvBNReLU(nn.Module):
    features: int
    kernel_size: int = 3
    strides: int = 1
    dilation: int = 1
    groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=self.strides,
            padding=self.dilation * (self.kernel_size // 2),
            kernel_dilation=self.dilation,
            feature_group_count=self.groups,
            use_bias=False,
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.relu(x)


class MyNet(nn.Module):
    dropout: float = 0.05

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = ConvBNReLU(32)(x, train)  # 32x32, receptive field 3
        x = ConvBNReLU(32)(x, train)  # 32x32, 5
        x = ConvBNReLU(48, strides=2)(x, train)  # 16x16, 7
        x = ConvBNReLU(48, groups=48)(x, train)  # depthwise 3x3, 16x16, 11
        x = ConvBNReLU(64, kernel_size=1)(x, train)  # pointwise, 16x16, 11
        x = ConvBNReLU(64, dilation=2)(x, train)  # dilated, 16x16, 19
        x = ConvBNReLU(96, strides=2)(x, train)  # 8x8, 23
        x = ConvBNReLU(96, groups=96)(x, train)  # depthwise, 8x8, 31
        x = ConvBNReLU(128, kernel_size=1)(x, train)  # pointwise, 8x8, 31
        x = ConvBNReLU(128, strides=2, groups=128)(x, train)  # depthwise, 4x4, 39
        x = ConvBNReLU(128, kernel_size=1)(x, train)  # pointwise, 4x4, 39
        x = ConvBNReLU(128, groups=8)(x, train)  # grouped, 4x4, 55
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = jnp.mean(x, axis=(1, 2))  # global average pooling
        return nn.Dense(10)(x)
