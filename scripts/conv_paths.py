r"""Time every convolution of the seed networks by each exact formulation that applies to it.

    python scripts/conv_paths.py [--models=all] [--batch_size=128] [--repeats=5]

For each distinct conv layer (its input shape, kernel, stride, padding, dilation, groups), one
line: per formulation, milliseconds for the forward pass alone (what evaluation runs) and for
forward + backward (both gradients: what training runs), `name=forward/train`, at the batch
size, the median of --repeats timings after compilation, the formulations taking turns.
`chosen` is what `conv.conv2d` runs on this backend; the others are the rewrites in
`cifar_flax/models/conv.py` that hold for the layer:

    native       lax.conv_general_dilated (feature_group_count, rhs_dilation, strides)
    dense        conv.dense_conv (matrix product or native; groups as a block-diagonal kernel),
                 where `chosen` is another formulation
    subsampled   conv.subsampled_conv (stride divides dilation and padding)
    phases       conv.space_to_batch_conv (dilated, stride 1)
    batched      conv.batched_group_conv (grouped and depthwise: one product batched over groups)

The outputs of every formulation are checked against `native` before timing.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cifar_flax.config_lib import COMPUTE_DTYPES
from cifar_flax.console import quiet_library_logs
from cifar_flax.host_memory import restart_reusing_freed_memory
from cifar_flax.models import NETWORKS, conv, create_model
from cifar_flax.models.layers import Conv2d
from cifar_flax.summary import trace

_MODELS = flags.DEFINE_string("models", "all", "Comma-separated network names, or 'all'.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Images per step.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timings per figure (the median is printed).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", COMPUTE_DTYPES, "Compute dtype.")

Layer = tuple[tuple[int, ...], tuple[int, ...], int, int, int, int]
Path = Callable[[jax.Array, jax.Array], jax.Array]


def conv_layers(name: str) -> list[Layer]:
    """(input shape without batch, kernel shape, stride, padding, dilation, groups) of each
    Conv2d of network `name`, in call order."""
    layers: list[Layer] = []
    for call in trace(create_model(name), (1, 32, 32, 3))[0].walk():
        module = call.module
        if isinstance(module, Conv2d):
            cin = call.in_shape[-1]
            kernel = (module.kernel_size, module.kernel_size, cin // module.groups, module.features)
            settings = (module.stride, module.padding, module.dilation, module.groups)
            layers.append((call.in_shape[1:], kernel, *settings))
    return layers


def formulations(layer: Layer) -> dict[str, Path]:
    """Every formulation that computes `layer` exactly, by name."""
    _, kernel_shape, stride, padding, dilation, groups = layer

    def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
        if groups > 1:
            kernel = conv.block_diagonal_kernel(kernel, groups)
        return conv.dense_conv(x, kernel, stride, padding, dilation)

    paths: dict[str, Path] = {
        "chosen": lambda x, k: conv.conv2d(x, k, stride, padding, dilation, groups),
        "native": lambda x, k: conv.native_conv(x, k, stride, padding, dilation, groups),
    }
    # On the CPU `conv2d` already runs `dense` for every layer but a depthwise one.
    if jax.default_backend() != "cpu" and (groups == 1 or kernel_shape[2] > 1):
        paths["dense"] = dense
    if groups == 1 and stride > 1 and dilation % stride == 0 and padding % stride == 0:
        paths["subsampled"] = lambda x, k: conv.subsampled_conv(x, k, stride, padding, dilation)
    if groups > 1:
        paths["batched"] = lambda x, k: conv.batched_group_conv(
            x, k, stride, padding, dilation, groups
        )
    if groups == 1 and stride == 1 and dilation > 1:
        paths["phases"] = lambda x, k: conv.space_to_batch_conv(x, k, padding, dilation)
    return paths


def milliseconds(
    paths: dict[str, Path], x: jax.Array, kernel: jax.Array, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median times of each path's forward pass and of its forward and both gradients (a fixed
    output gradient), all timings interleaved so that the machine's drift falls on all alike."""

    def forward_backward(path: Path) -> Callable[..., tuple[jax.Array, ...]]:
        def run(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, ...]:
            y, vjp = jax.vjp(path, x, kernel)
            return (y, *vjp(jnp.ones_like(y)))

        return jax.jit(run)

    steps = {
        (name, part): jax.jit(path) if part == "forward" else forward_backward(path)
        for name, path in paths.items()
        for part in ("forward", "train")
    }
    for step in steps.values():
        jax.block_until_ready(step(x, kernel))
    timings: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            started = time.perf_counter()
            jax.block_until_ready(step(x, kernel))
            timings[key].append(time.perf_counter() - started)
    median = {key: 1e3 * statistics.median(times) for key, times in timings.items()}
    return {name: (median[name, "forward"], median[name, "train"]) for name in paths}


def check_equal(paths: dict[str, Path], x: jax.Array, kernel: jax.Array) -> None:
    """Every formulation's output within 1e-5 (float32) or 1e-2 (bfloat16) of the largest
    magnitude of the native conv's in float32, from the same inputs (as tests/test_conv.py)."""
    reference = np.asarray(paths["native"](x.astype(jnp.float32), kernel.astype(jnp.float32)))
    scale = np.max(np.abs(reference))
    tolerance = 1e-5 if x.dtype == jnp.float32 else 1e-2
    for name, path in paths.items():
        error = np.max(np.abs(np.asarray(path(x, kernel), np.float32) - reference)) / scale
        if error > tolerance:
            sys.exit(f"error: {name} differs from native by {error:.1e} of its scale")


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    names = list(NETWORKS) if _MODELS.value == "all" else _MODELS.value.split(",")
    dtype = jnp.dtype(_DTYPE.value)
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}, batch {_BATCH_SIZE.value}")
    seen: set[Layer] = set()
    for name in names:
        for layer in conv_layers(name):
            if layer in seen:
                continue
            seen.add(layer)
            shape, kernel_shape, *settings = layer
            x = jax.random.normal(jax.random.key(0), (_BATCH_SIZE.value, *shape), dtype)
            kernel = jax.random.normal(jax.random.key(1), kernel_shape, dtype) / 3
            paths = formulations(layer)
            check_equal(paths, x, kernel)
            times = milliseconds(paths, x, kernel, _REPEATS.value)
            described = " ".join(
                f"{path}={forward:.1f}/{train:.1f}" for path, (forward, train) in times.items()
            )
            stride, padding, dilation, groups = settings
            print(
                f"{name} in={shape} kernel={kernel_shape} s{stride} p{padding} d{dilation} "
                f"g{groups}: {described}",
                flush=True,
            )


if __name__ == "__main__":
    restart_reusing_freed_memory()
    app.run(main)
