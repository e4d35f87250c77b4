"""A run's directory: its default name, the check that it can be written, the config.json it
keeps, and whether a config may resume the run it holds."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
from ml_collections import config_dict

from cifar_flax.config_lib import NOT_RECIPE, flatten
from cifar_flax.errors import CifarFlaxError
from cifar_flax.models.external import canonical

DEFAULT_RUNS = "runs"
CONFIG_FILE = "config.json"


def default_workdir(config_spec: str, model_override: str | None = None) -> pathlib.Path:
    """runs/NAME for a run without --workdir: one directory per config file, variant and model."""
    path, _, variant = config_spec.partition(":")
    parts = [pathlib.Path(path).stem, *(token for token in variant.split(",") if token)]
    if model_override:
        parts.append(model_override.rpartition(":")[2].removesuffix(".py").rpartition("/")[2])
    return pathlib.Path(DEFAULT_RUNS) / "-".join(parts)


def prepare(workdir: str | pathlib.Path) -> pathlib.Path:
    """The workdir, created; a one-line error where this process cannot write to it."""
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CifarFlaxError(f"cannot write to --workdir={path}: {reason}") from error
    return path


def config_json(config: config_dict.ConfigDict) -> dict[str, Any]:
    """The config as JSON values, the model named as it loads from any working directory."""
    values = json.loads(config.to_json_best_effort())
    return {**values, "model": canonical(config.model)}


def write_config(workdir: pathlib.Path, config: config_dict.ConfigDict) -> None:
    (workdir / CONFIG_FILE).write_text(json.dumps(config_json(config), indent=2) + "\n")


def changed_settings(meta: dict[str, Any], config: config_dict.ConfigDict) -> list[str]:
    """How `config` differs from the one the checkpoint's run trained with, key by key.

    More epochs continue a run only where the learning-rate schedule does not depend on them.
    """
    saved = flatten({**meta["config"], "model": meta["model"]})
    current = flatten(config_json(config))
    ignored = set(NOT_RECIPE)  # where the data is and how it is produced may change
    if config.lr_schedule != "onecycle":
        ignored.add("num_epochs")
    return [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(saved.keys() & current.keys())
        if key not in ignored and saved.get(key) != current.get(key)
    ][:3]


def check_resumable(
    meta: dict[str, Any], config: config_dict.ConfigDict, workdir: pathlib.Path
) -> None:
    changed = changed_settings(meta, config)
    if changed:
        raise CifarFlaxError(
            f"{workdir} holds a run with other settings ({'; '.join(changed)}); pass "
            "--workdir=DIR to train this config elsewhere, or resume with the settings it has"
        )
