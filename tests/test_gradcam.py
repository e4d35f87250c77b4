"""Grad-CAM: its heatmaps fall where the class is drawn, for any network, at a layer chosen by
name or by default."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cifar_flax import gradcam
from cifar_flax.errors import CifarFlaxError
from cifar_flax.models import create_model

CLASSES = 4
DRAWN = (slice(2, 13), slice(2, 13))  # where each image's class is drawn: the top left
QUADRANT = (slice(0, 16), slice(0, 16))  # a quarter of the image


class SmallNet(nn.Module):
    """A user's network in plain Flax: the last spatial conv's output is 8x8."""

    @nn.compact
    def __call__(self, x, train=False):
        for features, stride in ((16, 1), (32, 2), (32, 2), (32, 1)):
            x = nn.relu(nn.Conv(features, (3, 3), strides=stride, padding=1)(x))
        return nn.Dense(CLASSES)(x.mean(axis=(1, 2)))


def images_with_the_class_top_left(count, rng):
    """Noise everywhere; the class as a coloured square in the top left only."""
    labels = rng.integers(0, CLASSES, count)
    images = rng.normal(0, 1, (count, 32, 32, 3))
    colours = np.array([(2, 0, 0), (0, 2, 0), (0, 0, 2), (-2, -2, -2)])
    images[:, DRAWN[0], DRAWN[1]] += colours[labels][:, None, None, :]
    return jnp.asarray(images, jnp.float32), jnp.asarray(labels)


def trained_small_net():
    model = SmallNet()
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss(params):
            logits = model.apply(params, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(150):
        params, opt_state = step(params, opt_state, *images_with_the_class_top_left(64, rng))
    return model, params, images_with_the_class_top_left(64, rng)


def test_the_heatmap_falls_where_the_class_is_drawn():
    model, variables, (images, labels) = trained_small_net()
    layer = gradcam.choose_layer(model, None)
    assert layer == "Conv_3"
    predicted, maps = jax.jit(lambda v, x: gradcam.heatmaps(model, v, x, layer))(variables, images)
    assert float(jnp.mean(predicted == labels)) > 0.9  # it learnt the class from the square
    maps = np.asarray(maps, np.float64)
    assert maps.shape == (64, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    in_quadrant = maps[:, QUADRANT[0], QUADRANT[1]].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    assert np.median(in_quadrant) > 0.6  # against a quarter of the area


def test_the_default_layer_is_the_last_spatial_conv_and_a_wrong_name_lists_the_choices():
    model = create_model("s7_dilated_stride")
    layers = gradcam.spatial_conv_layers(model)
    assert gradcam.choose_layer(model, None) == layers[-1]
    assert gradcam.choose_layer(model, layers[0]) == layers[0]
    with pytest.raises(CifarFlaxError, match=r"eval\.gradcam_layer 'nope' is not one of") as raised:
        gradcam.choose_layer(model, "nope")
    assert str(raised.value).endswith(", ".join(layers))
    assert "\n" not in str(raised.value)
