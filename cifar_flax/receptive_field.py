"""The receptive field drawn (`--mode=summary`): the theoretical field layer by layer against
the assignment's 44, and the effective field (Luo et al., 2016) of an initialised or trained
network.

The effective field is the mean absolute gradient of one output unit, the centre position of
the last convolution whose output is still spatial (summed over its channels), with respect to
each input pixel, over a batch of random images: where in the image that unit actually looks.
Its size is the side of the smallest square, centred on the gradient's centre of mass, that
holds 95% of the gradient's mass.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from cifar_flax import checkpoints, gradcam, plots
from cifar_flax.models import create_model
from cifar_flax.summary import ASSIGNMENT_MIN_RECEPTIVE_FIELD, Summary, format_summary, summarize

PLOT_FILE = "rf.png"
MASS_SHARE = 0.95
BATCH = 16


@dataclasses.dataclass(frozen=True)
class EffectiveField:
    layer: str  # the module whose centre unit it is
    theoretical: int  # that unit's theoretical receptive field (side, in pixels)
    gradient: np.ndarray  # (H, W): mean absolute gradient of the unit per input pixel
    centre: tuple[int, int]  # the gradient's centre of mass, rounded (row, column)
    side: int  # the centred square holding MASS_SHARE of the gradient's mass

    @property
    def support(self) -> tuple[int, int]:
        """Height and width of the bounding box of the pixels the unit depends on at all."""
        rows, columns = np.nonzero(self.gradient)
        return int(np.ptp(rows)) + 1, int(np.ptp(columns)) + 1


def centre_unit_gradient(
    model: nn.Module, variables: Any, layer: str, images: jax.Array
) -> jax.Array:
    """(H, W): the mean absolute gradient of `layer`'s centre unit (summed over its channels)
    with respect to each pixel of `images`, over the batch and the colour channels."""

    def centre_unit(images: jax.Array) -> jax.Array:
        _, output = gradcam.layer_output(model, variables, images, layer)
        height, width = output.shape[1:3]
        return output[:, height // 2, width // 2, :].sum()

    return jnp.abs(jax.grad(centre_unit)(images)).mean(axis=(0, 3))


def square_side(gradient: np.ndarray, share: float = MASS_SHARE) -> tuple[tuple[int, int], int]:
    """The gradient's centre of mass (rounded) and the side of the smallest square centred
    there that holds `share` of its mass (clipped at the image's edges)."""
    mass = np.asarray(gradient, np.float64) / gradient.sum()
    rows, columns = np.indices(mass.shape)
    centre = (round(float((rows * mass).sum())), round(float((columns * mass).sum())))
    distance = np.maximum(np.abs(rows - centre[0]), np.abs(columns - centre[1]))
    held = np.array([mass[distance <= d].sum() for d in range(max(mass.shape))])
    reach = int(np.argmax(held >= share - 1e-9))
    return centre, 2 * reach + 1


def effective_field(
    model: nn.Module, variables: Any, summary: Summary, image_size: int = 32, seed: int = 0
) -> EffectiveField:
    """The effective field of the centre unit of the model's last spatial convolution."""
    layer = gradcam.choose_layer(model, None)
    theoretical = [row.r_out for row in summary.field_rows if row.layer == layer][-1]
    images = jax.random.normal(jax.random.key(seed), (BATCH, image_size, image_size, 3))
    gradient = np.asarray(
        jax.jit(lambda v, x: centre_unit_gradient(model, v, layer, x))(variables, images)
    )
    centre, side = square_side(gradient)
    return EffectiveField(layer, theoretical, gradient, centre, side)


def model_and_variables(
    config: config_dict.ConfigDict, workdir: str | None
) -> tuple[str, nn.Module, Any, str]:
    """(model name, model, variables, where the weights came from): the latest checkpoint of
    `workdir` where it holds one, else `config.model` initialised from `config.seed`."""
    if workdir is not None and checkpoints.checkpoint_dir(workdir).is_dir():
        from cifar_flax.evaluation import restore_checkpoint
        from cifar_flax.steps import make_mesh

        step, meta, model, variables = restore_checkpoint(workdir, "latest", make_mesh())
        return meta["model"], model, variables, f"trained: step {step} of {workdir}"
    model = create_model(config.model)
    image = jnp.zeros((1, 32, 32, 3))
    variables = jax.jit(lambda key: model.init(key, image, train=False))(
        jax.random.key(config.seed)
    )
    return config.model, model, variables, f"initialised from seed {config.seed}"


def describe(field: EffectiveField, source: str) -> str:
    share = round(100 * MASS_SHARE)
    return (
        f"Effective receptive field: {share}% of the gradient of {field.layer}'s centre unit "
        f"within {field.side}x{field.side} pixels (theoretical {field.theoretical}; {source})"
    )


def summarize_and_draw(config: config_dict.ConfigDict, workdir: str | None) -> None:
    """`--mode=summary`: the summary's text, the effective field's line and, with a workdir,
    rf.png in it."""
    name, model, variables, source = model_and_variables(config, workdir)
    summary = summarize(model, name)
    field = effective_field(model, variables, summary)
    print(format_summary(summary))
    print(describe(field, source))
    if workdir is None:
        return
    path = pathlib.Path(workdir) / PLOT_FILE
    convs = summary.convs()
    plots.save_receptive_field(
        [row.layer for row in convs],
        [row.r_out for row in convs],
        ASSIGNMENT_MIN_RECEPTIVE_FIELD,
        field.gradient,
        field.centre,
        field.side,
        path,
        title=f"{name}: receptive field ({source})",
    )
    print(f"Receptive field drawn: {path}")
