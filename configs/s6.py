"""Session 6 (EVA8): seed 004, s6_grouped, 187,418 params.

--config=configs/s6.py        our default recipe
--config=configs/s6.py:seed   the seed's own recipe (below)
--config=configs/s6.py:val    tuning: train on train[:45000], evaluate on train[45000:]
"""

from ml_collections import config_dict

from cifar_flax.config_lib import augmentation, base_config, select


def s6_grouped() -> config_dict.ConfigDict:
    """Seed 004: SGD(0.01, momentum 0.9), no scheduler, 62 x 128 (the run that finished).

    The seed drew its CoarseDropout p once from U(0.35, 0.52); we fix the midpoint. Its fill of
    0.4734 on uint8 images made the holes black. It normalized with mean = std = 0.5.
    """
    config = base_config()
    config.model = "s6_grouped"
    config.num_epochs = 62
    config.learning_rate = 0.01
    config.augment = augmentation(
        hflip_p=0.49,
        shift_scale_rotate_p=0.45,
        hole_fill="black",
        coarse_dropout_p=0.435,
    )
    config.normalize.mean = (0.5, 0.5, 0.5)
    config.normalize.std = (0.5, 0.5, 0.5)
    return config


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return select(arg, {"s6_grouped": s6_grouped}, default="s6_grouped")
