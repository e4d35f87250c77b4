"""Session 7 ("advanced convolutions", EVA6): seeds 003 (default), 000 and 001.

    --config=configs/s7.py                     s7_lite (seed 003), 97,284 params
    --config=configs/s7.py:s7_dwsep            seed 000, 170,304 params
    --config=configs/s7.py:s7_dilated_stride   seed 001, 98,180 params

Each function below holds its seed's training recipe as SPEC.md records it; `,seed` after the
variant (`configs/s7.py:seed`, `configs/s7.py:s7_dwsep,seed`) trains with it, otherwise our
default recipe (config_lib.default_recipe) replaces the optimisation settings, and for s7_lite
also the augmentation (`s7_lite_tuned`). `,val` (e.g. `configs/s7.py:s7_dwsep,val`) holds the
last 5,000 training images out for tuning.
"""

from ml_collections import config_dict

from cifar_flax.config_lib import augmentation, base_config, select


def light_augmentation() -> config_dict.ConfigDict:
    """The flip/shift-scale-rotate/hole trio at the strengths that validated best for our
    sub-100k-parameter nets (README, Results: tuning), without color jitter or gray."""
    return augmentation(
        hflip_p=0.5, shift=0.1, rotate=15, shift_scale_rotate_p=0.5, coarse_dropout_p=0.25
    )


def s7_lite() -> config_dict.ConfigDict:
    """Seed 003: Adam + coupled L2 + OneCycle (per step) + grad-clip 0.1, 90 x 256."""
    config = base_config()
    config.model = "s7_lite"
    config.seed = 1
    config.num_epochs = 90
    config.batch_size = 256
    config.optimizer = "adam"
    config.learning_rate = 0.01  # OneCycle's max_lr
    config.weight_decay = 1e-4
    config.grad_clip_value = 0.1
    config.lr_schedule = "onecycle"
    config.augment = augmentation(
        hflip_p=0.2,
        shift=0.1,
        scale=0.1,
        rotate=15,
        shift_scale_rotate_p=0.25,
        coarse_dropout_p=0.5,
        color_jitter=(0.3, 0.3, 0.3, 0.2),
        color_jitter_p=0.25,
        to_gray_p=0.15,
    )
    config.normalize.mean = (0.49140, 0.48216, 0.44653)
    config.normalize.std = (0.24703, 0.24349, 0.26159)
    return config


def s7_dwsep() -> config_dict.ConfigDict:
    """Seed 000: Adam(0.01) at a constant LR (no scheduler ran), 100 x 128."""
    config = base_config()
    config.model = "s7_dwsep"
    config.seed = 42
    config.num_epochs = 100
    config.optimizer = "adam"
    config.learning_rate = 0.01
    config.augment = augmentation(
        hflip_p=0.2,
        shift=0.1,
        scale=0.1,
        rotate=10,
        shift_scale_rotate_p=0.2,
        coarse_dropout_p=0.2,
        to_gray_p=0.15,
    )
    config.normalize.mean = (0.4914, 0.4822, 0.4466)
    return config


def s7_dilated_stride() -> config_dict.ConfigDict:
    """Seed 001: SGD lr 0.04, 36 x 128. Momentum 0.9, a constant LR and the assignment's
    flip/shift-scale-rotate/hole trio are assumptions: the seed states none of them.

    The trio's strength was tuned on `,val` (README, Results): Albumentations 1.x's default
    45-degree rotations and a hole in every other image left this 98k-parameter net at 82.8%.
    """
    config = base_config()
    config.model = "s7_dilated_stride"
    config.num_epochs = 36
    config.learning_rate = 0.04
    config.augment = light_augmentation()
    return config


def s7_lite_tuned(config: config_dict.ConfigDict) -> None:
    """Our recipe's change for s7_lite, tuned on `,val` (README, Results: tuning): under the
    seed's heavier augmentation (color jitter, gray, a hole in every other image) this
    97k-parameter net fit its training images at only 82-84%; the light trio validated at 87.9%.
    """
    config.augment = light_augmentation()


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return select(
        arg,
        {"s7_lite": s7_lite, "s7_dwsep": s7_dwsep, "s7_dilated_stride": s7_dilated_stride},
        default="s7_lite",
        tuned={"s7_lite": s7_lite_tuned},
    )
