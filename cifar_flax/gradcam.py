"""Grad-CAM (Selvaraju et al., 2017): where in an image a network found its prediction.

For a chosen layer with a spatial output A (N, H, W, C), the gradient of the predicted class's
output with respect to A, averaged over H and W, weighs A's channels; the weighted sum, through
a ReLU, is the heatmap, scaled to [0, 1] per image and resized to the image. By default the layer
is the last convolution whose output is still spatial. The layer's output is reached through
Flax's method interception, so any Linen network works, a user's own included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_flax.errors import CifarFlaxError
from cifar_flax.summary import summarize


def spatial_conv_layers(model: nn.Module) -> list[str]:
    """The paths of the model's convolutions whose outputs are still spatial (over 1x1), in
    the order the forward pass runs them."""
    rows = summarize(model, "").field_rows
    return [row.layer for row in rows if row.kind == "conv" and row.n_out > 1]


def choose_layer(model: nn.Module, requested: str | None) -> str:
    """`requested`, or the last spatial convolution; a one-line error naming the choices."""
    layers = spatial_conv_layers(model)
    if not layers:
        raise CifarFlaxError(
            "Grad-CAM needs a convolution with a spatial output; the model has none"
        )
    if requested is None:
        return layers[-1]
    if requested not in layers:
        raise CifarFlaxError(
            f"eval.gradcam_layer {requested!r} is not one of the model's convolutions with a "
            f"spatial output: {', '.join(layers)}"
        )
    return requested


def module_path(module: nn.Module) -> str:
    return "/".join(module.scope.path)


def layer_output(
    model: nn.Module,
    variables: Any,
    images: jax.Array,
    layer: str,
    shift: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The model's outputs on `images` and the output of its module at path `layer`, with
    `shift` added to that output (a gradient with respect to `shift` is one with respect to the
    layer's output)."""
    seen = []

    def intercept(next_fun: Any, args: Sequence[Any], kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and module_path(context.module) == layer:
            out = out if shift is None else out + shift
            seen.append(out)
        return out

    with nn.intercept_methods(intercept):
        outputs = model.apply(variables, images, train=False)
    return outputs, seen[-1]


def heatmaps(
    model: nn.Module, variables: Any, images: jax.Array, layer: str
) -> tuple[jax.Array, jax.Array]:
    """(predicted classes, heatmaps (N, height, width) in [0, 1]) of normalised `images`."""
    logits, activation = layer_output(model, variables, images, layer)
    predicted = jnp.argmax(logits, -1)

    def predicted_score(shift: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits, activation = layer_output(model, variables, images, layer, shift)
        return jnp.take_along_axis(logits, predicted[:, None], -1).sum(), activation

    gradient, activation = jax.grad(predicted_score, has_aux=True)(jnp.zeros_like(activation))
    weights = gradient.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * activation).sum(-1))
    cam = cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    height, width = images.shape[1:3]
    resized = jax.image.resize(cam, (cam.shape[0], height, width), "bilinear")
    return predicted, jnp.clip(resized, 0, 1)
