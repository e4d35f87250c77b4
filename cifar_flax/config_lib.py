"""The keys every config has, the values each key accepts, and how a config file's variant is
picked (`--config=configs/s7.py:s7_dwsep,seed,val`, `configs/s9.py:fast`).

It lives in the package rather than in configs/ so that a config file loads from any working
directory (ml_collections imports config files by path, so `configs/` is not importable).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ml_collections import config_dict

from cifar_flax.errors import CifarFlaxError

# The values each option accepts; the modules that act on them take them from here.
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "step", "onecycle")
ONECYCLE_ANNEALS = ("cos", "linear")
HOLE_FILLS = ("mean", "black")  # augment.coarse_dropout.fill, see hole_fill_value
COMPUTE_DTYPES = ("float32", "bfloat16")  # see cifar_flax.steps.in_compute_dtype
AUGMENT_PLACES = ("auto", "host", "device")  # see cifar_flax.device_augment.on_device

# CIFAR-10 training-set statistics (0-1 scale; `--mode=data` prints them).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def hole_fill_value(fill: str, mean: Sequence[float]) -> tuple[int, int, int]:
    """The uint8 colour of a CoarseDropout hole (on the host and on the devices).

    "mean": the dataset mean, mean * 255 truncated as 1.x wrote it into the uint8 image.
    "black": what seeds 002 and 004 got by passing a 0-1 mean to a uint8 image (truncated to 0).
    """
    if fill == "mean":
        return tuple(int(channel * 255) for channel in mean)
    if fill == "black":
        return (0, 0, 0)
    raise ValueError(f"hole fill {fill!r} is not one of {HOLE_FILLS}")


def import_file(
    path: str | pathlib.Path, name: str | None = None, register: bool = False
) -> types.ModuleType:
    """Import a Python file by path (config files, users' networks, scripts, the PyTorch
    reference); `register` puts it in sys.modules, where dataclasses and pickling look."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_config(spec: str | pathlib.Path) -> config_dict.ConfigDict:
    """The config that `--config=SPEC` gives, e.g. "configs/s7.py:s7_dwsep,seed"."""
    path, _, arg = str(spec).partition(":")
    module = import_file(path, "config")
    return module.get_config(arg) if arg else module.get_config()


def base_config() -> config_dict.ConfigDict:
    """Every key with a neutral default; each configs/*.py recipe sets what it trains with."""
    config = config_dict.ConfigDict()
    config.model = "s7_lite"
    config.seed = 0

    # Data (tensorflow-datasets `cifar10`); data_dir None is tfds's default (~/tensorflow_datasets).
    config.data_dir = config_dict.placeholder(str)
    config.download = True  # let tfds download CIFAR-10 when data_dir lacks it
    config.train_split = "train"
    config.eval_split = "test"
    config.batch_size = 128
    config.num_epochs = 30

    # Optimisation: optimizer one of OPTIMIZERS; lr_schedule one of LR_SCHEDULES.
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.momentum = 0.9  # SGD momentum, or Adam's beta1
    config.nesterov = False
    config.weight_decay = 0.0  # coupled L2, PyTorch `weight_decay` semantics
    config.l1 = 0.0
    config.grad_clip_value = config_dict.placeholder(float)  # clip_grad_value_, before decay
    config.lr_schedule = "constant"
    # False leaves BatchNorm's scales and shifts and every bias out of the weight decay; True
    # decays every parameter, as PyTorch's `weight_decay` does.
    config.decay_norm_and_bias = True
    config.label_smoothing = 0.0  # of the training loss's targets (evaluation has none)
    # PyTorch OneCycleLR's defaults; the LR peaks at config.learning_rate.
    config.onecycle = config_dict.ConfigDict(
        dict(
            pct_start=0.3,
            div_factor=25.0,
            final_div_factor=1e4,
            three_phase=False,
            anneal="cos",
            cycle_momentum=True,
            base_momentum=0.85,
            max_momentum=0.95,
        )
    )
    config.step_schedule = config_dict.ConfigDict(dict(step_size=6, gamma=0.2))  # in epochs
    # Activations and convolutions in this dtype (one of COMPUTE_DTYPES); parameters, optimizer
    # state, BatchNorm statistics and the loss stay float32.
    config.compute_dtype = "float32"
    # Evaluate on each image and its mirror image, with the two outputs' mean as the prediction.
    config.eval_flip = False
    config.eval = inspection()

    config.augment = augmentation()
    # Where the training augmentation runs: "host" (Albumentations in worker processes),
    # "device" (the split resident on the devices, augmented there by the same transforms) or
    # "auto" (the devices on a GPU or TPU, the host on a CPU). One of AUGMENT_PLACES.
    config.augment_on = "auto"
    config.augment_workers = config_dict.placeholder(int)  # processes; None: one per CPU core
    config.normalize = config_dict.ConfigDict(dict(mean=CIFAR10_MEAN, std=CIFAR10_STD))
    config.lr_find = lr_range_test()
    return config


def inspection() -> config_dict.ConfigDict:
    """`config.eval`: --mode=eval's gradcam.png weighs the output of `gradcam_layer` (a path as
    --mode=summary lists it; None: the last convolution whose output is still spatial)."""
    return config_dict.ConfigDict(dict(gradcam_layer=config_dict.placeholder(str)))


def lr_range_test() -> config_dict.ConfigDict:
    """`config.lr_find`, --mode=lr_find: the LR grows exponentially from `start` to `stop` over
    `steps` updates; the loss is smoothed (an exponential moving average with `smoothing` on the
    past) and the test stops once it exceeds `diverge` times its minimum (docs/inspect.md)."""
    return config_dict.ConfigDict(
        dict(start=1e-5, stop=10.0, steps=100, smoothing=0.95, diverge=4.0)
    )


def augmentation(
    hflip_p: float = 0.0,
    translate: int = 0,
    shift: float = 0.0625,
    scale: float = 0.1,
    rotate: float = 45.0,
    shift_scale_rotate_p: float = 0.0,
    hole_size: int = 16,
    hole_fill: str = "mean",
    coarse_dropout_p: float = 0.0,
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    color_jitter_p: float = 0.0,
    to_gray_p: float = 0.0,
) -> config_dict.ConfigDict:
    """The seeds' Albumentations transforms, applied in this order; p = 0 turns one off.

    Defaults of the shift/scale/rotate ranges are Albumentations 1.x `ShiftScaleRotate`'s, which
    the seeds ran. `translate` moves every image by up to that many whole pixels in x and y
    (drawn uniformly, 0 included), the border reflected: a random crop of the image padded by
    `translate` on each side. `hole_fill` is "mean" (the dataset mean as uint8, the seeds'
    intent) or "black" (what a 0-1 fill value truncated to uint8 gave in seeds 002 and 004).
    """
    # ConfigDict keeps each field's first type: an int here would refuse `--config...=12.5`.
    brightness, contrast, saturation, hue = map(float, color_jitter)
    return config_dict.ConfigDict(
        dict(
            hflip_p=float(hflip_p),
            translate=int(translate),
            shift_scale_rotate=dict(
                shift=float(shift),
                scale=float(scale),
                rotate=float(rotate),
                p=float(shift_scale_rotate_p),
            ),
            coarse_dropout=dict(size=hole_size, fill=hole_fill, p=float(coarse_dropout_p)),
            color_jitter=dict(
                brightness=brightness,
                contrast=contrast,
                saturation=saturation,
                hue=hue,
                p=float(color_jitter_p),
            ),
            to_gray_p=float(to_gray_p),
        )
    )


VALIDATION_SPLITS = ("train[:45000]", "train[45000:]")  # (train, eval) of a tuning run


def is_validation(split: str) -> bool:
    """Whether `split` is held out of the training split (a validation split), not the test set:
    choosing a checkpoint on it is fair, and its figures are reported as "val"."""
    return split.startswith("train")


def fast_recipe(config: config_dict.ConfigDict, num_epochs: int) -> config_dict.ConfigDict:
    """Our recipe `config` (its network, seed, batch and optimiser) made for time to accuracy
    (the `,fast` variant).

    As many epochs as fit in about 12 minutes on a 2-core CPU (the caller's `num_epochs`), so
    no augmentation but the flip; label smoothing 0.2; the weight decay on the kernels alone;
    evaluation on each image and its mirror image. docs/tuning.md has the validation runs
    behind it.
    """
    config.num_epochs = num_epochs
    config.decay_norm_and_bias = False
    config.label_smoothing = 0.2
    config.augment = augmentation(hflip_p=0.5)
    config.eval_flip = True
    return config


def select(
    arg: str | None,
    recipes: Mapping[str, tuple[Callable[[], config_dict.ConfigDict], ...]],
    default: str,
) -> config_dict.ConfigDict:
    """The config that a config file's `:arg` names: `[variant][,seed|,fast][,val]`.

    `recipes` maps each variant (a network) to (our recipe, its seed's own recipe, our recipe
    for time to accuracy); `seed` picks the second, `fast` the third; `val` trains on the first
    45,000 training images and evaluates on the other 5,000, so that recipes are tuned without
    looking at the test set.
    """
    options = ("seed", "fast", "val")
    tokens = [token for token in (arg or "").split(",") if token]
    variants = [token for token in tokens if token not in options]
    name = variants[0] if variants else default
    if name not in recipes or len(variants) > 1 or {"seed", "fast"} <= set(tokens):
        raise ValueError(
            f"unknown config variant {arg!r}; use [VARIANT][,seed|,fast][,val] with VARIANT one "
            f"of: {', '.join(recipes)}"
        )
    ours, seeds, fast = recipes[name]
    config = seeds() if "seed" in tokens else fast() if "fast" in tokens else ours()
    if "val" in tokens:
        config.train_split, config.eval_split = VALIDATION_SPLITS
    return config


# Where the data is and how it is produced: they do not change what a run trains.
NOT_RECIPE = (
    "data_dir",
    "download",
    "augment_workers",
    "eval.gradcam_layer",
    *(f"lr_find.{key}" for key in ("start", "stop", "steps", "smoothing", "diverge")),
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples, so JSON and config values compare."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = tuple(value) if isinstance(value, list) else value
    return flat


def describe(config: config_dict.ConfigDict) -> str:
    """The keys that decide what a run trains, one `key = value` a line; settings that take no
    part (another schedule's, a transform with p = 0) are left out."""
    flat = flatten(json.loads(config.to_json_best_effort()))
    schedule_keys = {"onecycle": "onecycle", "step": "step_schedule"}
    unused = {key for name, key in schedule_keys.items() if name != config.lr_schedule}
    transforms = ("shift_scale_rotate", "coarse_dropout", "color_jitter")
    unused |= {f"augment.{name}" for name in transforms if not config.augment[name].p}

    def shown(key: str) -> bool:
        return not (key in NOT_RECIPE or key.rpartition(".")[0] in unused or key in unused)

    lines = [f"  {key} = {value}" for key, value in flat.items() if shown(key)]
    return "Recipe:\n" + "\n".join(lines)


def validate(config: config_dict.ConfigDict) -> None:
    """Refuse values no run can use, with the key and what it accepts, before any work starts."""
    augment = config.augment
    probabilities = {
        "augment.hflip_p": augment.hflip_p,
        "augment.shift_scale_rotate.p": augment.shift_scale_rotate.p,
        "augment.coarse_dropout.p": augment.coarse_dropout.p,
        "augment.color_jitter.p": augment.color_jitter.p,
        "augment.to_gray_p": augment.to_gray_p,
    }
    rules = [
        (config.num_epochs >= 1, "num_epochs must be at least 1"),
        (config.batch_size >= 1, "batch_size must be at least 1"),
        (config.learning_rate > 0, "learning_rate must be positive"),
        (0 <= config.momentum < 1, "momentum must be in [0, 1)"),
        (config.weight_decay >= 0, "weight_decay must not be negative"),
        (config.l1 >= 0, "l1 must not be negative"),
        (0 <= config.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (
            config.grad_clip_value is None or config.grad_clip_value > 0,
            "grad_clip_value must be positive (or None for no clipping)",
        ),
        (config.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (
            config.lr_schedule in LR_SCHEDULES,
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}",
        ),
        (0 < config.onecycle.pct_start < 1, "onecycle.pct_start must be in (0, 1)"),
        (
            config.onecycle.anneal in ONECYCLE_ANNEALS,
            f"onecycle.anneal must be one of {', '.join(ONECYCLE_ANNEALS)}",
        ),
        (config.step_schedule.step_size >= 1, "step_schedule.step_size must be at least 1"),
        (
            config.compute_dtype in COMPUTE_DTYPES,
            f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}",
        ),
        (
            augment.coarse_dropout.fill in HOLE_FILLS,
            f"augment.coarse_dropout.fill must be one of {', '.join(HOLE_FILLS)}",
        ),
        (augment.translate >= 0, "augment.translate must not be negative (pixels)"),
        (
            config.augment_on in AUGMENT_PLACES,
            f"augment_on must be one of {', '.join(AUGMENT_PLACES)}",
        ),
        (
            config.augment_workers is None or config.augment_workers >= 0,
            "augment_workers must not be negative",
        ),
        *(
            (0 <= p <= 1, f"{key} must be a probability in [0, 1]")
            for key, p in probabilities.items()
        ),
    ]
    refuse_broken(rules)


def refuse_broken(rules: list[tuple[bool, str]]) -> None:
    """A one-line error for the first rule that does not hold."""
    for ok, message in rules:
        if not ok:
            raise CifarFlaxError(f"bad config: {message}")


def validate_lr_find(config: config_dict.ConfigDict) -> None:
    """Refuse an LR range test that cannot run, naming the key."""
    test = config.lr_find
    rules = [
        (0 < test.start < test.stop, "lr_find.start must be positive and below lr_find.stop"),
        (test.steps >= 2, "lr_find.steps must be at least 2"),
        (0 <= test.smoothing < 1, "lr_find.smoothing must be in [0, 1)"),
        (test.diverge > 1, "lr_find.diverge must be above 1 (a multiple of the lowest loss)"),
    ]
    refuse_broken(rules)
