"""Shared test fixtures: a synthetic CIFAR-10 built from the repository alone, small configs."""

import atexit
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# One XLA compilation cache for the whole test session, this process and the programs it starts:
# the many short runs compile the same steps, and each would otherwise compile them again. It
# starts empty in a fresh directory, so a test session never reuses another's compilations.
CACHE = tempfile.mkdtemp(prefix="cifar_flax_xla_cache_")
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
# Tests check what the steps compute, not how fast: without XLA's backend optimisations the
# CPU compiles them in half the time. (The shipped checkpoints' figures are checked as users
# run them, with XLA's defaults: tests/test_pretrained.py.)
FAST_COMPILE = "--xla_backend_optimization_level=1"
USERS_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
os.environ.update(
    JAX_COMPILATION_CACHE_DIR=CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    XLA_FLAGS=f"{USERS_XLA_FLAGS} {FAST_COMPILE}".strip(),
)


def with_xla_flags(*flags: str, fast_compile: bool = True) -> dict[str, str]:
    """This process's environment for a program, with more XLA flags (e.g. a device count)."""
    base = os.environ["XLA_FLAGS"] if fast_compile else USERS_XLA_FLAGS
    return {**os.environ, "XLA_FLAGS": " ".join((base, *flags)).strip()}


import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cifar_flax.config_lib import import_file, load_config  # noqa: E402
from tests.synthetic_data import write_binary_archive  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real CIFAR-10 prepared for tfds (read-only): only tests about the real data itself use it.
REAL_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "tfds"
needs_real_data = pytest.mark.skipif(
    not (REAL_DATA_DIR / "cifar10").exists(),
    reason=f"needs the real CIFAR-10 prepared for tfds in {REAL_DATA_DIR} "
    "(python scripts/prepare_cifar10.py --archive cifar-10-python.tar.gz --data_dir that path)",
)
# The end-to-end tier: whole programs in subprocesses (`pytest -m e2e`).
e2e = pytest.mark.e2e


@functools.cache
def prepare_script():
    """scripts/prepare_cifar10.py as a module; importing it defines its absl flags, so once."""
    return import_file(REPO_ROOT / "scripts" / "prepare_cifar10.py")


@functools.cache
def synthetic_data_dir() -> str:
    """A tfds data_dir holding the synthetic CIFAR-10 (2,000 train, 500 test), made once."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="cifar_flax_synthetic_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    prepare_script().prepare(write_binary_archive(root / "archive"), root / "tfds")
    return str(root / "tfds")


@pytest.fixture
def repo_root() -> pathlib.Path:
    return REPO_ROOT


def on_eight_cpu_devices(code: str) -> subprocess.CompletedProcess:
    """Run Python `code` in a process whose JAX has 8 CPU devices; a failure shows its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**with_xla_flags("--xla_force_host_platform_device_count=8"), "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def cli(repo_root, *args, env=None):
    """`python -m cifar_flax.main ARGS` run from `repo_root`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cifar_flax.main", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def make_config(**overrides):
    """configs/s7.py's seed recipe (Adam), shrunk to 512 train / 256 test synthetic images.

    Its LR stays 0.01 for the two epochs tests train and then explodes: a test that goes on to
    more epochs (allowed, as the schedule does not depend on them) meets a NaN loss, with the
    same compiled step as every other test.
    """
    config = load_config(REPO_ROOT / "configs" / "s7.py:seed")
    config.update(
        dict(
            data_dir=synthetic_data_dir(),
            train_split="train[:512]",
            eval_split="test[:256]",
            batch_size=64,
            num_epochs=2,
            lr_schedule="step",
            augment_workers=0,
            download=False,
        )
    )
    config.step_schedule.step_size, config.step_schedule.gamma = 2, 1e14
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def two_epochs(tmp_path_factory):
    """A finished run of make_config(): (workdir, last record); tests leave its checkpoints be."""
    from cifar_flax import train  # TensorFlow loads only for the tests that train

    workdir = tmp_path_factory.mktemp("two_epochs")
    record = train.train_and_evaluate(make_config(), str(workdir))
    return workdir, record


def ks_distance(first, second):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs."""
    first, second = np.sort(first), np.sort(second)
    points = np.concatenate([first, second])
    gaps = np.searchsorted(first, points, "right") / len(first) - np.searchsorted(
        second, points, "right"
    ) / len(second)
    return np.abs(gaps).max()
