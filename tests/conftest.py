"""Shared test fixtures."""

import pathlib
import subprocess
import sys

import pytest

from cifar_flax.config_lib import load_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real CIFAR-10, prepared for tfds (read-only); tests use small slices of it.
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "tfds"
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "cifar10").exists(), reason=f"{DATA_DIR} is not here"
)


@pytest.fixture
def repo_root() -> pathlib.Path:
    return REPO_ROOT


def cli(repo_root, *args):
    """`python -m cifar_flax.main ARGS` run from `repo_root`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cifar_flax.main", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def make_config(**overrides):
    """configs/s7.py's seed recipe (Adam), shrunk to 512 train / 256 test images."""
    config = load_config(REPO_ROOT / "configs" / "s7.py:seed")
    config.update(
        dict(
            data_dir=str(DATA_DIR),
            train_split="train[:512]",
            eval_split="test[:256]",
            batch_size=64,
            num_epochs=2,
            lr_schedule="constant",
            augment_workers=0,
            download=False,
        )
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def two_epochs(tmp_path_factory):
    """A finished run of make_config(): (workdir, last record); tests leave its checkpoints be."""
    from cifar_flax import train  # TensorFlow loads only for the tests that train

    workdir = tmp_path_factory.mktemp("two_epochs")
    record = train.train_and_evaluate(make_config(), str(workdir))
    return workdir, record
