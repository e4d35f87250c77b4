"""One training or evaluation step: pure functions of (state, batch), jitted over a device mesh.

The batch is sharded over the mesh's "data" axis and the state replicated, so one code path
serves one CPU, one GPU or eight TPU cores; BatchNorm statistics and the loss are computed over
the whole global batch, as on one device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_dict

from cifar_flax.config_lib import OPTIMIZERS
from cifar_flax.errors import CifarFlaxError
from cifar_flax.schedules import learning_rate_schedule, momentum_schedule

DATA_AXIS = "data"
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
    """Params and optimizer state (with the step count), BatchNorm statistics, dropout key."""

    batch_stats: Any
    dropout_key: jax.Array


def create_optimizer(
    config: config_dict.ConfigDict,
    steps_per_epoch: int,
    learning_rate: optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """PyTorch's order: clip_grad_value_, then coupled L2 (`weight_decay`), then SGD or Adam.

    `learning_rate` replaces the config's LR schedule (the LR range test's growing LR).

    Without `decay_norm_and_bias`, the L2 applies to the weights alone: the parameters named
    "kernel", as Flax's and the seed networks' convolutions and dense layers name theirs.

    The LR (and momentum, or Adam's beta1, when OneCycle cycles it) are injected hyper-parameters,
    so the optimizer state records them per step and a resumed run continues the schedule.
    """
    if learning_rate is None:
        learning_rate = learning_rate_schedule(config, steps_per_epoch)
    momentum = momentum_schedule(config, steps_per_epoch)
    if config.optimizer == "sgd":
        optimizer = optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))(
            learning_rate=learning_rate, momentum=momentum, nesterov=config.nesterov
        )
    elif config.optimizer == "adam":
        optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate, b1=momentum)
    else:
        raise CifarFlaxError(
            f"unknown optimizer {config.optimizer!r}; use one of: {', '.join(OPTIMIZERS)}"
        )
    chain = []
    if config.grad_clip_value is not None:
        chain.append(optax.clip(config.grad_clip_value))
    if config.weight_decay:
        mask = None if config.decay_norm_and_bias else weights_only
        chain.append(optax.add_decayed_weights(config.weight_decay, mask=mask))
    return optax.chain(*chain, optimizer)


def weights_only(params: Any) -> Any:
    """True for the kernels of `params`, False for BatchNorm's scales and shifts and the biases
    (and for any leaf not under a dict key, e.g. in a list)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def last_learning_rate(state: TrainState) -> jax.Array:
    """The LR of the last update (optax records the hyper-parameters each update used)."""
    return state.opt_state[-1].hyperparams["learning_rate"]


def in_compute_dtype(apply_fn: Callable[..., Any], compute_dtype: str) -> Callable[..., Any]:
    """`apply_fn` computing in `compute_dtype`: the parameters and images cast to it, and what
    it returns cast back to float32.

    The cast is inside the differentiated function, so gradients reach the float32 parameters
    in float32; BatchNorm statistics are not cast (Flax reduces them in float32) and stay
    float32 in the state. It applies to any network, the user's own included.
    """
    if compute_dtype == "float32":
        return apply_fn
    dtype = jnp.dtype(compute_dtype)

    def cast(tree: Any, to: jnp.dtype) -> Any:
        return jax.tree.map(
            lambda a: a.astype(to) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
        )

    def apply(variables: Any, images: jax.Array, *args: Any, **kwargs: Any) -> Any:
        variables = {**variables, "params": cast(variables["params"], dtype)}
        return cast(apply_fn(variables, images.astype(dtype), *args, **kwargs), jnp.float32)

    return apply


def create_train_state(
    model: nn.Module,
    config: config_dict.ConfigDict,
    steps_per_epoch: int,
    image_size: int = 32,
    learning_rate: optax.Schedule | None = None,
) -> TrainState:
    """Initial state: PyTorch-style init from `config.seed`, and the dropout key; the model
    computes in `config.compute_dtype`; `learning_rate` as `create_optimizer`'s."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = jax.jit(functools.partial(model.init, train=False))(
        init_key, jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    )
    return TrainState.create(
        apply_fn=in_compute_dtype(model.apply, config.compute_dtype),
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(config, steps_per_epoch, learning_rate),
        dropout_key=dropout_key,
    )


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy; equals NLL on the seeds' log_softmax outputs. With
    label smoothing the target puts 1 - s + s/K on the label and s/K on each other class."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def train_step(
    state: TrainState, batch: Batch, l1: float = 0.0, label_smoothing: float = 0.0
) -> tuple[TrainState, Metrics]:
    """One SGD/Adam update on `batch`; dropout draws from (dropout_key, step)."""
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
        if l1:
            loss += l1 * sum(jnp.abs(p).sum() for p in jax.tree.leaves(params))
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {
        "loss": loss,
        "correct": jnp.sum(jnp.argmax(logits, -1) == batch["label"]),
        "learning_rate": last_learning_rate(state),
    }
    return state, metrics


def eval_step(
    apply_fn: Callable[..., jax.Array], variables: Any, batch: Batch, flip: bool = False
) -> Metrics:
    """Loss and correct counts over the batch's real examples (`mask` marks padding out); with
    `flip`, of the mean of the outputs for each image and its mirror image."""
    logits = apply_fn(variables, batch["image"], train=False)
    if flip:
        mirrored = apply_fn(variables, batch["image"][:, :, ::-1], train=False)
        logits = (logits + mirrored) / 2
    mask = batch["mask"]
    predictions = jnp.argmax(logits, -1)
    return {
        "loss_sum": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum((predictions == batch["label"]) * mask),
        "predictions": predictions,
    }


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all), for data parallelism.

    Auto axes let XLA propagate the shardings (jax.make_mesh now defaults to explicit-sharding
    types, which Flax's dropout masks do not carry).
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def jit_train_step(
    mesh: Mesh, l1: float = 0.0, label_smoothing: float = 0.0
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """`train_step` compiled for `mesh`; the old state's buffers are donated to the new one."""
    return jax.jit(
        functools.partial(train_step, l1=l1, label_smoothing=label_smoothing),
        in_shardings=(replicated(mesh), data_sharding(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=0,
    )


def jit_eval_step(
    mesh: Mesh, apply_fn: Callable[..., jax.Array], flip: bool = False
) -> Callable[[Any, Batch], Metrics]:
    """`eval_step` of a model (`apply_fn`) compiled for `mesh`: (variables, batch) -> metrics."""
    return jax.jit(
        functools.partial(eval_step, apply_fn, flip=flip),
        in_shardings=(replicated(mesh), data_sharding(mesh)),
        out_shardings=replicated(mesh),
    )


def jit_config_eval_step(
    mesh: Mesh, model: nn.Module, config: config_dict.ConfigDict
) -> Callable[[Any, Batch], Metrics]:
    """The eval step of `model` as `config` evaluates: in its compute dtype, mirrored or not."""
    apply_fn = in_compute_dtype(model.apply, config.compute_dtype)
    return jit_eval_step(mesh, apply_fn, config.eval_flip)
