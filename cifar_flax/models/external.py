"""A network of the user's own, named `path/to/file.py:ClassName` or `package.module:ClassName`.

The contract (docs/your_network.md): a Flax Linen module constructible with no arguments
whose `__call__(x, train: bool)` takes NHWC float32 images and returns (N, 10) logits or
log-probabilities, keeps BatchNorm statistics in the `batch_stats` collection and draws dropout
from the `dropout` rng. Checkpoints record the file's absolute path, so `--mode=eval` finds the
class again from any working directory.
"""

from __future__ import annotations

import importlib
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_flax.config_lib import import_file
from cifar_flax.errors import CifarFlaxError, first_line

NUM_CLASSES = 10
HELP = "--config.model=path/to/file.py:ClassName or package.module:ClassName"


def is_external(spec: str) -> bool:
    return ":" in spec


def canonical(spec: str) -> str:
    """The spec with a file path made absolute: the same network from any working directory."""
    if not is_external(spec):
        return spec
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        where = str(pathlib.Path(where).expanduser().resolve())
    return f"{where}:{name}"


def import_where(where: str, spec: str) -> object:
    """The module a spec names, imported from its file or its package."""
    if where.endswith(".py"):
        path = pathlib.Path(where).expanduser()
        if not path.is_file():
            raise CifarFlaxError(f"model file {where} not found ({HELP})")
        try:
            return import_file(path, f"cifar_flax_user_{path.stem}", register=True)
        except Exception as error:
            raise CifarFlaxError(f"cannot import {where}: {first_line(error)}") from error
    try:
        return importlib.import_module(where)
    except Exception as error:
        raise CifarFlaxError(
            f"cannot import {where} for {spec!r}: {first_line(error)} ({HELP})"
        ) from error


def load_external(spec: str) -> type[nn.Module]:
    """The class of the user's module named by `spec`, checked against the contract."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise CifarFlaxError(f"bad model {spec!r}; use {HELP}")
    module = import_where(where, spec)
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        found = sorted(
            key
            for key, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, nn.Module)
            and value.__module__ == module.__name__
        )
        raise CifarFlaxError(
            f"{where} has no Flax module {name!r}"
            + (f"; it defines: {', '.join(found)}" if found else "; it defines no nn.Module")
        )
    try:
        model = cls()
    except TypeError as error:
        raise CifarFlaxError(
            f"{spec}: the class must be constructible with no arguments ({first_line(error)}); "
            "give its fields defaults"
        ) from error
    check_contract(model, spec)
    return cls


def check_contract(model: nn.Module, spec: str) -> None:
    """(N, 10) outputs from `model.init(key, images, train=False)`, or one line saying why not."""
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    try:
        out = jax.eval_shape(
            lambda x: model.init_with_output(jax.random.key(0), x, train=False), images
        )[0]
    except Exception as error:
        raise CifarFlaxError(
            f"{spec}: calling it as model(x, train=False) on a (2, 32, 32, 3) batch failed: "
            f"{first_line(error)}"
        ) from error
    if getattr(out, "shape", None) != (2, NUM_CLASSES):
        raise CifarFlaxError(
            f"{spec} returns {getattr(out, 'shape', type(out).__name__)} for a batch of 2; "
            f"it must return (N, {NUM_CLASSES}) logits or log-probabilities"
        )
