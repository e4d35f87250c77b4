"""The configs in configs/: required keys, variants, and each seed's recipe as the seed ran it."""

import pytest

from cifar_flax.config_lib import describe, load_config
from cifar_flax.models import NETWORKS

REQUIRED_KEYS = {
    "model",
    "num_epochs",
    "batch_size",
    "seed",
    "data_dir",
    "train_split",
    "eval_split",
}
CONFIGS = {
    "configs/s7.py": "s7_lite",
    "configs/s7.py:s7_lite": "s7_lite",
    "configs/s7.py:s7_dwsep": "s7_dwsep",
    "configs/s7.py:s7_dilated_stride": "s7_dilated_stride",
    "configs/s9.py": "s9_inverted_residual",
    "configs/s6.py": "s6_grouped",
}


def load(repo_root, spec):
    return load_config(repo_root / spec)


@pytest.mark.parametrize(("spec", "model"), CONFIGS.items())
def test_config_selects_its_model_and_has_the_required_keys(repo_root, spec, model):
    config = load(repo_root, spec)
    assert config.model == model
    assert config.model in NETWORKS
    assert set(config.keys()) >= REQUIRED_KEYS
    assert (config.train_split, config.eval_split) == ("train", "test")


@pytest.mark.parametrize("variant", ["nope", "seed,fast"])
def test_unknown_variant_is_refused(repo_root, variant):
    with pytest.raises(ValueError, match=f"unknown config variant '{variant}'; use"):
        load(repo_root, f"configs/s7.py:{variant}")


@pytest.mark.parametrize("spec", CONFIGS)
def test_fast_keeps_the_network_and_changes_the_recipe(repo_root, spec):
    ours = load(repo_root, spec)
    fast = load(repo_root, spec + ("," if ":" in spec else ":") + "fast")
    assert (fast.model, fast.seed, fast.batch_size, fast.normalize) == (
        ours.model,
        ours.seed,
        ours.batch_size,
        ours.normalize,
    )
    assert fast.num_epochs < ours.num_epochs
    assert (fast.label_smoothing, fast.decay_norm_and_bias, fast.eval_flip) == (0.2, False, True)
    assert (fast.augment.hflip_p, fast.augment.translate) == (0.5, 0)
    assert not fast.augment.shift_scale_rotate.p and not fast.augment.coarse_dropout.p


@pytest.mark.parametrize("spec", ["configs/s7.py:s7_dwsep,val", "configs/s9.py:seed,val"])
def test_val_holds_out_part_of_the_training_split_and_changes_nothing_else(repo_root, spec):
    config = load(repo_root, spec)
    same = load(repo_root, spec.removesuffix(",val"))
    assert (config.train_split, config.eval_split) == ("train[:45000]", "train[45000:]")
    config.train_split, config.eval_split = same.train_split, same.eval_split
    assert config == same


@pytest.mark.parametrize("spec", CONFIGS)
def test_augmentation_strengths_take_fractional_overrides(repo_root, spec):
    augment = load(repo_root, spec).augment
    augment.shift_scale_rotate.rotate = 12.5
    augment.coarse_dropout.p = 0.3
    augment.hflip_p = 0.25
    assert (augment.shift_scale_rotate.rotate, augment.coarse_dropout.p) == (12.5, 0.3)


# (optimizer, lr, schedule, epochs, batch, weight decay, clip) as the seeds ran them.
RECIPES = {
    "configs/s7.py:seed": ("adam", 0.01, "onecycle", 90, 256, 1e-4, 0.1),
    "configs/s7.py:s7_dwsep,seed": ("adam", 0.01, "constant", 100, 128, 0.0, None),
    "configs/s7.py:s7_dilated_stride,seed": ("sgd", 0.04, "constant", 36, 128, 0.0, None),
    "configs/s9.py:seed": ("sgd", 0.1, "constant", 25, 128, 0.0, None),
    "configs/s6.py:seed": ("sgd", 0.01, "constant", 62, 128, 0.0, None),
}


@pytest.mark.parametrize(("spec", "recipe"), RECIPES.items())
def test_seed_recipe(repo_root, spec, recipe):
    c = load(repo_root, spec)
    got = (
        c.optimizer,
        c.learning_rate,
        c.lr_schedule,
        c.num_epochs,
        c.batch_size,
        c.weight_decay,
        c.grad_clip_value,
    )
    assert got == recipe


@pytest.mark.parametrize("spec", CONFIGS)
def test_default_recipe_is_sgd_onecycle_on_the_seed_schedule(repo_root, spec):
    config = load(repo_root, spec)
    seed = load(repo_root, f"{spec},seed" if ":" in spec else f"{spec}:seed")
    assert (config.optimizer, config.nesterov, config.lr_schedule) == ("sgd", True, "onecycle")
    assert (config.model, config.num_epochs, config.batch_size) == (
        seed.model,
        seed.num_epochs,
        seed.batch_size,
    )
    assert config.augment.coarse_dropout.fill == "mean"


def test_seed_augmentations(repo_root):
    s7 = load(repo_root, "configs/s7.py:seed").augment
    assert (s7.hflip_p, s7.shift_scale_rotate.rotate, s7.shift_scale_rotate.p) == (0.2, 15, 0.25)
    assert (s7.coarse_dropout.fill, s7.coarse_dropout.p, s7.to_gray_p) == ("mean", 0.5, 0.15)
    assert s7.color_jitter.to_dict() == dict(
        brightness=0.3, contrast=0.3, saturation=0.3, hue=0.2, p=0.25
    )
    s9 = load(repo_root, "configs/s9.py:seed")
    assert s9.augment.coarse_dropout.fill == "black"  # the seed's 0-1 fill on uint8 images
    assert s9.augment.shift_scale_rotate.to_dict() == dict(
        shift=0.0625, scale=0.1, rotate=45.0, p=0.5
    )
    assert s9.augment.color_jitter.p == 0 and s9.augment.to_gray_p == 0
    s6 = load(repo_root, "configs/s6.py:seed")
    assert tuple(s6.normalize.mean) == tuple(s6.normalize.std) == (0.5, 0.5, 0.5)


def test_s7_lite_default_recipe_takes_its_tuned_augmentation(repo_root):
    tuned = load(repo_root, "configs/s7.py").augment
    assert (tuned.hflip_p, tuned.shift_scale_rotate.p, tuned.coarse_dropout.p) == (0.5, 0.5, 0.25)
    assert tuned.color_jitter.p == tuned.to_gray_p == 0
    assert load(repo_root, "configs/s7.py:val").augment == tuned


def test_the_printed_recipe_shows_what_trains_and_leaves_out_what_does_not(repo_root):
    config = load(repo_root, "configs/s7.py")
    lines = describe(config).splitlines()
    assert lines[0] == "Recipe:"
    shown = dict(line.strip().split(" = ", 1) for line in lines[1:])
    expected = {
        "model": "s7_lite",
        "num_epochs": "90",
        "batch_size": "256",
        "optimizer": "sgd",
        "nesterov": "True",
        "lr_schedule": "onecycle",
        "learning_rate": "0.1",
        "onecycle.pct_start": "0.3",
        "augment.coarse_dropout.p": "0.25",
    }
    assert expected.items() <= shown.items()
    hidden = ("data_dir", "download", "augment_workers", "step_schedule.", "color_jitter.")
    assert not [key for key in shown if key.startswith(hidden) or ".color_jitter." in key]
    constant = describe(load(repo_root, "configs/s6.py:seed"))
    assert "  lr_schedule = constant\n" in constant and "onecycle." not in constant
