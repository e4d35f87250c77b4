"""Session 9 (ERA-V1): seed 002, s9_inverted_residual, 178,178 params.

--config=configs/s9.py        our default recipe
--config=configs/s9.py:seed   the seed's own recipe (below)
--config=configs/s9.py:val    tuning: train on train[:45000], evaluate on train[45000:]
"""

from ml_collections import config_dict

from cifar_flax.config_lib import augmentation, base_config, select


def s9_inverted_residual() -> config_dict.ConfigDict:
    """Seed 002: SGD(0.1, momentum 0.9) at a constant LR (its StepLR was never stepped), 25 x 128.

    Its CoarseDropout fill (0-1 mean values written into a uint8 image) made the holes black.
    """
    config = base_config()
    config.model = "s9_inverted_residual"
    config.seed = 1
    config.num_epochs = 25
    config.learning_rate = 0.1
    config.augment = augmentation(
        hflip_p=0.5, shift_scale_rotate_p=0.5, hole_fill="black", coarse_dropout_p=0.5
    )
    config.normalize.mean = (0.4914, 0.4822, 0.4471)
    config.normalize.std = (0.2469, 0.2433, 0.2615)
    return config


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return select(
        arg, {"s9_inverted_residual": s9_inverted_residual}, default="s9_inverted_residual"
    )
