"""The keys every config has, and the pieces of a seed's recipe, for the files in configs/.

It lives in the package rather than in configs/ so that a config file loads from any working
directory (ml_collections imports config files by path, so `configs/` is not importable).
"""

from __future__ import annotations

from ml_collections import config_dict

# CIFAR-10 training-set statistics (0-1 scale), measured on ../shared/data (see its README).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def base_config() -> config_dict.ConfigDict:
    """Defaults shared by every config; each configs/*.py file sets its seed's recipe on top."""
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

    # Optimisation: optimizer in {"sgd", "adam"}; lr_schedule in {"constant", "onecycle"}.
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.momentum = 0.9  # SGD momentum, or Adam's beta1
    config.nesterov = False
    config.weight_decay = 0.0  # coupled L2, PyTorch `weight_decay` semantics
    config.l1 = 0.0
    config.grad_clip_value = config_dict.placeholder(float)  # clip_grad_value_, before decay
    config.lr_schedule = "constant"
    config.onecycle = config_dict.ConfigDict(
        dict(
            pct_start=0.3,
            div_factor=25.0,
            final_div_factor=1e4,
            cycle_momentum=True,
            base_momentum=0.85,
            max_momentum=0.95,
        )
    )

    config.augment = augmentation()
    config.augment_workers = config_dict.placeholder(int)  # processes; None: one per CPU core
    config.normalize = config_dict.ConfigDict(dict(mean=CIFAR10_MEAN, std=CIFAR10_STD))
    return config


def augmentation(
    hflip_p: float = 0.0,
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
    the seeds ran. `hole_fill` is "mean" (the dataset mean as uint8, the seeds' intent) or
    "black" (what a 0-1 fill value truncated to uint8 gave in seeds 002 and 004).
    """
    brightness, contrast, saturation, hue = color_jitter
    return config_dict.ConfigDict(
        dict(
            hflip_p=hflip_p,
            shift_scale_rotate=dict(
                shift=shift, scale=scale, rotate=rotate, p=shift_scale_rotate_p
            ),
            coarse_dropout=dict(size=hole_size, fill=hole_fill, p=coarse_dropout_p),
            color_jitter=dict(
                brightness=brightness,
                contrast=contrast,
                saturation=saturation,
                hue=hue,
                p=color_jitter_p,
            ),
            to_gray_p=to_gray_p,
        )
    )


def select(arg: str | None, recipes: dict, default: str) -> config_dict.ConfigDict:
    """The recipe named by a config file's `:arg`, with a clear error for an unknown one."""
    name = arg or default
    if name not in recipes:
        raise ValueError(f"unknown config variant {name!r}; choose one of: {', '.join(recipes)}")
    return recipes[name]()
