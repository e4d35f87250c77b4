"""Session 9 (ERA-V1): seed 002's network, s9_inverted_residual, 178,178 params.

    --config=configs/s9.py        our recipe: s9_inverted_residual() below
    --config=configs/s9.py:seed   the seed's own recipe: s9_inverted_residual_seed()
    --config=configs/s9.py:fast   our recipe for time to accuracy: s9_inverted_residual_fast()
    add ,val (configs/s9.py:val, configs/s9.py:seed,val) to train on train[:45000] and evaluate
    on train[45000:] (tuning)

docs/seeds.md tells what the seed ran and reported.
"""

from ml_collections import config_dict

from cifar_flax.config_lib import augmentation, base_config, fast_recipe, select


def s9_inverted_residual() -> config_dict.ConfigDict:
    """Our recipe: SGD + Nesterov under OneCycle to 0.1, coupled L2 5e-4, the seed's epochs,
    batch and augmentation with mean-filled holes."""
    config = base_config()
    config.model = "s9_inverted_residual"
    config.seed = 1
    config.num_epochs = 25
    config.batch_size = 128
    config.optimizer = "sgd"
    config.nesterov = True
    config.momentum = 0.9
    config.lr_schedule = "onecycle"
    config.learning_rate = 0.1  # OneCycle's peak
    config.weight_decay = 5e-4
    config.augment = augmentation(
        hflip_p=0.5, shift_scale_rotate_p=0.5, hole_fill="mean", coarse_dropout_p=0.5
    )
    config.normalize.mean = (0.4914, 0.4822, 0.4471)
    config.normalize.std = (0.2469, 0.2433, 0.2615)
    return config


def s9_inverted_residual_seed() -> config_dict.ConfigDict:
    """Seed 002's own recipe: SGD(0.1, momentum 0.9) at a constant LR (its StepLR was never
    stepped); its hole fill (0-1 mean values written into a uint8 image) made the holes black."""
    config = s9_inverted_residual()
    config.nesterov = False
    config.lr_schedule = "constant"
    config.weight_decay = 0.0
    config.augment.coarse_dropout.fill = "black"
    return config


def s9_inverted_residual_fast() -> config_dict.ConfigDict:
    return fast_recipe(s9_inverted_residual(), num_epochs=2)


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return select(
        arg,
        {
            "s9_inverted_residual": (
                s9_inverted_residual,
                s9_inverted_residual_seed,
                s9_inverted_residual_fast,
            )
        },
        default="s9_inverted_residual",
    )
